//! Every statement afterward sends to a schema's tables, written once per
//! schema. Each is one
//! round trip: a hand-off stores a whole batch of chains and their jobs in
//! one statement; a step is recorded, and its chain moved on, in one.
//!
//! A chain has one graphile_worker job, its cursor, with the key
//! `afterward:{chain id}`. The job carries the step it is at (id, index,
//! task name and payload), so a worker reads nothing else before it runs a
//! step. Recording a step done moves the job on to the next step (or
//! removes it after the last), and the worker runs that next step at once,
//! in the same job: a chain's steps follow each other without a round trip
//! through the queue.
//!
//! A hand-off inserts its jobs into graphile_worker's jobs table itself and
//! notifies the workers as `add_jobs` would, without `add_jobs`' per-key
//! locks and replacement rules, which a new chain's key never needs: that
//! halves the database's work per chain. The rarer statements (repair) use
//! `add_jobs`.

pub(crate) use crate::schema::state;
use crate::schema::{IDENTIFIER, Schema, hex, job_key, job_payload};

#[derive(Debug)]
pub(crate) struct Statements {
    /// Stores steps, queues the job of each new chain and notifies the
    /// workers if it queued any; returns the transaction's id (after a
    /// column that only makes the notification happen).
    pub(crate) store: String,
    /// Records steps done, each moving its chain's job on; returns, for
    /// each in order, the next step of its chain, if any (none for a step
    /// not waiting any more: recorded done before). The work is the
    /// function `afterward_done`, made by the migration (`schema.rs`).
    pub(crate) done: String,
    /// Records a step failed for good, and either moves its chain's job on
    /// (returning the next step) or drops the rest of the chain (returning
    /// the steps dropped).
    pub(crate) failed: String,
    /// Keeps the error of a step's failed attempt, for its status.
    pub(crate) last_error: String,
    /// A step's status, joined with its job's while the job is at it (then
    /// the job's error, which graphile_worker records with each failed
    /// attempt, is the latest).
    pub(crate) status: String,
    /// Deletes the chains finished before a time, and their jobs.
    pub(crate) prune: String,
    /// Queues again the chains whose next step waits with no live job.
    pub(crate) repair: String,
    /// Takes the schema's repair lock for the transaction, if no other
    /// worker holds it: `add_jobs` retires a locked job of the same key, so
    /// two repairs of one chain at once could run its step twice.
    pub(crate) repair_lock: String,
    /// Notifies the workers when a step's job has been runnable for a
    /// while, in case a worker missed it.
    pub(crate) pulse: String,
}

impl Statements {
    pub(crate) fn new(schema: &Schema) -> Statements {
        let s = schema.quoted();
        let payload = job_payload("n");
        // The job of the chain of row `n`, at that step.
        let spec = format!(
            "row('{IDENTIFIER}', {payload}, null, null, n.max_attempts,
                 {key}, null, null)::{s}.job_spec",
            key = job_key("n.chain"),
        );
        // Moves the job `$2` of the chain of the step in `f` on to the
        // chain's next step, or removes it after the last; returns the next
        // step, to run at once. With `f` empty (the step was recorded
        // before, and the answer lost), the job is left as it is.
        let move_on = format!(
            "next as (
                select n.* from f
                join {s}.afterward_steps n on n.chain = f.chain and n.index = f.index + 1
                where not f.last
            ), moved as (
                update {s}._private_jobs
                set payload = (select {payload} from next n), attempts = 1, last_error = null
                where id = $2 and exists (select 1 from next)
            ), gone as (
                delete from {s}._private_jobs
                where id = $2 and exists (select 1 from f) and not exists (select 1 from next)
            )"
        );
        // The next step; for a step recorded before, the one its job was
        // moved on to, if any.
        let next_step = format!(
            "coalesce((select {payload} from next n),
                      (select j.payload from {s}._private_jobs j
                       where j.id = $2 and j.payload->>'step' <> {step}))",
            step = hex("$1::uuid"),
        );
        Statements {
            store: format!(
                "with n as (
                    insert into {s}.afterward_steps
                        (id, chain, index, last, name, payload, stop_on_failure, max_attempts)
                    select * from unnest($1::uuid[], $2::uuid[], $3::int4[], $4::bool[],
                                         $5::text[], $6::json[], $7::bool[], $8::int2[])
                    on conflict (id) do nothing
                    returning *
                ), queued as (
                    insert into {s}._private_jobs (task_id, payload, max_attempts, key)
                    select (select id from {s}._private_tasks where identifier = '{IDENTIFIER}'),
                           {payload}, n.max_attempts, {key}
                    from n where n.index = 0
                    on conflict (key) do nothing
                    returning 1
                )
                select (select count(pg_notify('jobs:insert', '{{\"count\":1}}'))
                        from (select 1 from queued limit 1) any_queued),
                       txid_current()",
                key = job_key("n.chain"),
            ),
            done: format!("select * from {s}.afterward_done($1::uuid[], $2, $3)"),
            failed: format!(
                "with failed as (
                    update {s}.afterward_steps
                    set state = {failed}, attempts = $3, last_error = $4, finished_at = now()
                    where id = $1::uuid and state = {waiting}
                    returning chain, index, last, stop_on_failure
                ), dropped as (
                    update {s}.afterward_steps d
                    set state = {dropped}, finished_at = now()
                    from failed
                    where failed.stop_on_failure and d.chain = failed.chain
                      and d.index > failed.index and d.state = {waiting}
                    returning d.index, d.name, {dropped_id} as id
                ), f as (
                    select chain, index, last or stop_on_failure as last from failed
                ), {move_on}
                select (select coalesce(json_agg(dropped order by index), '[]') from dropped),
                       {next_step}",
                failed = state::FAILED,
                waiting = state::WAITING,
                dropped = state::DROPPED,
                dropped_id = hex("d.id"),
            ),
            last_error: format!(
                "update {s}.afterward_steps set last_error = $2
                 where id = $1::uuid and state = {waiting}",
                waiting = state::WAITING,
            ),
            status: format!(
                "select s.state, s.attempts, coalesce(j.last_error, s.last_error) as last_error,
                        j.attempts as job_attempts,
                        j.locked_at is not null as locked
                 from {s}.afterward_steps s
                 left join {s}._private_jobs j
                   on j.key = {key} and j.payload->>'step' = {id}
                 where s.id = $1::uuid",
                key = job_key("s.chain"),
                id = hex("s.id"),
            ),
            prune: format!(
                "with old as (
                    select chain from {s}.afterward_steps
                    where last and finished_at < now() - make_interval(secs => $1)
                ), gone as (
                    delete from {s}.afterward_steps s using old where s.chain = old.chain
                ), jobs as (
                    delete from {s}._private_jobs
                    where key in (select {key} from old)
                )
                select count(*) from old",
                key = job_key("chain"),
            ),
            repair: format!(
                "with n as (
                    select s.* from {s}.afterward_steps s
                    where s.state = {waiting}
                      and s.created_at < now() - make_interval(secs => $1)
                      and (s.index = 0 or exists (
                          select 1 from {s}.afterward_steps p
                          where p.chain = s.chain and p.index = s.index - 1
                            and p.state in ({done}, {failed})))
                      and not exists (
                          select 1 from {s}._private_jobs j
                          where j.key = {key}
                            and (j.is_available or j.locked_at is not null))
                    limit 1000
                ), queued as (
                    select {s}.add_jobs(array(select {spec} from n))
                    where exists (select 1 from n)
                )
                select count(*) from queued",
                waiting = state::WAITING,
                done = state::DONE,
                failed = state::FAILED,
                key = job_key("s.chain"),
            ),
            repair_lock: format!(
                // The name is a plain identifier (`Schema`): safe in quotes.
                "select pg_try_advisory_xact_lock(hashtext('afterward repair {name}'))",
                name = schema.name(),
            ),
            pulse: format!(
                "select pg_notify('jobs:insert', '{{\"count\":1}}')
                 where exists (
                    select 1 from {s}._private_jobs j
                    join {s}._private_tasks t on t.id = j.task_id
                    where t.identifier = '{IDENTIFIER}' and j.is_available
                      and j.run_at < now() - make_interval(secs => $1))"
            ),
        }
    }
}
