//! Every statement afterward sends, written once per schema. Each is one
//! round trip: a hand-off stores a whole batch of chains and their first
//! jobs in one statement; a step is recorded, its job removed and the next
//! step's job queued in one statement.
//!
//! A step's graphile_worker job carries what the step needs (its id, chain,
//! index, task name and payload), so a worker reads nothing else before it
//! runs a step. The job has the key `afterward:{step id}`, so there is at
//! most one per step.

use crate::schema::Schema;

/// The task identifier of every step's graphile_worker job.
pub(crate) const IDENTIFIER: &str = "afterward_step";

/// A step's state in `afterward_steps`. A waiting step whose job is locked
/// is running.
pub(crate) mod state {
    pub(crate) const WAITING: i16 = 0;
    pub(crate) const DONE: i16 = 2;
    pub(crate) const FAILED: i16 = 3;
    pub(crate) const DROPPED: i16 = 4;
}

#[derive(Debug)]
pub(crate) struct Statements {
    /// Stores steps, and queues the first step of each new chain; returns
    /// how many jobs it queued and the transaction's id.
    pub(crate) store: String,
    /// Records a step done, removes its job and queues the next step.
    pub(crate) done: String,
    /// Records a step failed for good, removes its job, and either queues
    /// the next step or drops the rest of the chain.
    pub(crate) failed: String,
    /// Keeps the error of a step's failed attempt, for its status.
    pub(crate) last_error: String,
    /// A step's status, joined with its job's.
    pub(crate) status: String,
    /// Deletes the chains finished before a time, and their jobs.
    pub(crate) prune: String,
    /// Queues again the waiting steps whose turn has come and that have no
    /// live job.
    pub(crate) repair: String,
    /// Notifies the workers when a step's job has been runnable for a
    /// while, in case a worker missed it.
    pub(crate) pulse: String,
}

impl Statements {
    pub(crate) fn new(schema: &Schema) -> Statements {
        let s = schema.quoted();
        // The job of a step, from a row of `afterward_steps` named `n`.
        let spec = format!(
            "row('{IDENTIFIER}',
                 json_build_object('step', replace(n.id::text, '-', ''),
                                   'chain', replace(n.chain::text, '-', ''),
                                   'index', n.index, 'name', n.name, 'payload', n.payload),
                 null, null, n.max_attempts, 'afterward:' || replace(n.id::text, '-', ''),
                 null, null)::{s}.job_spec"
        );
        let queue_next = |from: &str| {
            format!(
                "next as (
                    select n.* from {from} f
                    join {s}.afterward_steps n on n.chain = f.chain and n.index = f.index + 1
                    where not f.last
                ), queued as (
                    select {s}.add_jobs(array[{spec}]) from next n
                )"
            )
        };
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
                    select {s}.add_jobs(array(select {spec} from n where n.index = 0))
                    where exists (select 1 from n where n.index = 0)
                )
                select (select count(*) from queued), txid_current()"
            ),
            done: format!(
                "with f as (
                    update {s}.afterward_steps
                    set state = {done}, attempts = $3, finished_at = now()
                    where id = $1::uuid and state = {waiting}
                    returning chain, index, last
                ), gone as (
                    delete from {s}._private_jobs where id = $2
                ), {next}
                select (select count(*) from f), (select count(*) from queued)",
                done = state::DONE,
                waiting = state::WAITING,
                next = queue_next("f"),
            ),
            failed: format!(
                "with failed as (
                    update {s}.afterward_steps
                    set state = {failed}, attempts = $3, last_error = $4, finished_at = now()
                    where id = $1::uuid and state = {waiting}
                    returning chain, index, last, stop_on_failure
                ), gone as (
                    delete from {s}._private_jobs where id = $2
                ), dropped as (
                    update {s}.afterward_steps d
                    set state = {dropped}, finished_at = now()
                    from failed
                    where failed.stop_on_failure and d.chain = failed.chain
                      and d.index > failed.index and d.state = {waiting}
                    returning d.index, d.name, replace(d.id::text, '-', '') as id
                ), f as (
                    select * from failed where not stop_on_failure
                ), {next}
                select (select count(*) from failed),
                       (select coalesce(json_agg(dropped order by index), '[]') from dropped)",
                failed = state::FAILED,
                waiting = state::WAITING,
                dropped = state::DROPPED,
                next = queue_next("f"),
            ),
            last_error: format!(
                "update {s}.afterward_steps set last_error = $2
                 where id = $1::uuid and state = {waiting}",
                waiting = state::WAITING,
            ),
            status: format!(
                "select s.state, s.attempts, s.last_error,
                        j.attempts as job_attempts, j.last_error as job_error,
                        j.locked_at is not null as locked
                 from {s}.afterward_steps s
                 left join {s}._private_jobs j on j.key = 'afterward:' || replace(s.id::text, '-', '')
                 where s.id = $1::uuid"
            ),
            prune: format!(
                "with old as (
                    select chain from {s}.afterward_steps
                    where last and finished_at < now() - make_interval(secs => $1)
                ), gone as (
                    delete from {s}.afterward_steps s using old where s.chain = old.chain
                    returning s.id
                ), jobs as (
                    delete from {s}._private_jobs
                    where key in (select 'afterward:' || replace(id::text, '-', '') from gone)
                )
                select count(*) from old"
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
                          where j.key = 'afterward:' || replace(s.id::text, '-', '')
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
