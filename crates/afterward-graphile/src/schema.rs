//! What the migration makes: graphile_worker's tables, `afterward_steps`
//! (one row per durable task, in a state), the format of a chain's job, and
//! `afterward_done`, the function that records steps done; and the
//! schema's name, checked once.

use graphile_worker::WorkerUtils;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

use crate::Error;

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

/// A uuid `column` as the hex of a [`TaskId`](afterward::TaskId).
pub(crate) fn hex(column: &str) -> String {
    format!("replace({column}::text, '-', '')")
}

/// The key of the job of the chain whose id is in the uuid `column`.
pub(crate) fn job_key(column: &str) -> String {
    format!("'afterward:' || {}", hex(column))
}

/// The job payload of the step in row `row` of `afterward_steps`: a
/// `StepJob` (`job.rs`).
pub(crate) fn job_payload(row: &str) -> String {
    format!(
        "json_build_object('step', {id}, 'chain', {chain}, 'index', {row}.index,
                           'name', {row}.name, 'payload', {row}.payload)",
        id = hex(&format!("{row}.id")),
        chain = hex(&format!("{row}.chain")),
    )
}

/// `afterward_done(step_ids, job_ids, step_attempts)`: records the steps
/// done (those still waiting), run on those attempts in those jobs, and
/// moves each job on to its chain's next step, or removes it after the
/// last; returns, for each step in order, the next step as its job's
/// payload, or null. A step recorded before (the answer to that statement
/// was lost, and the worker asks again) gets the step its job was moved on
/// to, if any, so the worker carries on with the chain instead of ending
/// the job that now holds it. A function rather than a statement so that its plan
/// is made once per connection, not at every call: planning this
/// statement costs more than running it for a few steps.
fn done_function(s: &str) -> String {
    use state::{DONE, WAITING};
    let payload = job_payload("n");
    let step = hex("i.id");
    format!(
        "create or replace function {s}.afterward_done(
            step_ids uuid[], job_ids bigint[], step_attempts smallint[]
        ) returns setof json language plpgsql
        set plan_cache_mode = force_generic_plan as $body$
        begin
            return query with i as (
                select * from unnest(step_ids, job_ids, step_attempts)
                    with ordinality as i(id, job, attempts, at)
            ), f as (
                update {s}.afterward_steps s
                set state = {DONE}, attempts = i.attempts, finished_at = now()
                from i
                where s.id = i.id and s.state = {WAITING}
                returning s.id, s.chain, s.index, s.last, i.job
            ), next as (
                select f.id as after, f.job, n.* from f
                join {s}.afterward_steps n on n.chain = f.chain and n.index = f.index + 1
                where not f.last
            ), moved as (
                update {s}._private_jobs j
                set payload = {payload}, attempts = 1, last_error = null
                from next n
                where j.id = n.job
            ), gone as (
                delete from {s}._private_jobs j
                using f
                where j.id = f.job and not exists (select 1 from next n where n.after = f.id)
            )
            select coalesce(
                case when n.after is null then null else {payload} end,
                (select j.payload from {s}._private_jobs j
                 where j.id = i.job and j.payload->>'step' <> {step})
            )
            from i left join next n on n.after = i.id
            order by i.at;
        end
        $body$"
    )
}

/// A schema name checked to be a plain identifier, and its quoted form for
/// SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    name: String,
    quoted: String,
}

/// The error of a schema name that is not a plain identifier.
#[derive(Debug)]
pub(crate) struct BadSchema(String);

impl std::fmt::Display for BadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the schema name {:?} is not a plain identifier: use 1 to 63 bytes of ASCII letters, digits and \
             underscores, not starting with a digit (PostgreSQL cuts longer names, so two of them could \
             share one schema)",
            self.0
        )
    }
}

impl std::error::Error for BadSchema {}

impl Schema {
    /// Checks `name`: a plain identifier of at most 63 bytes (PostgreSQL's
    /// limit; longer names are cut, silently).
    pub(crate) fn new(name: &str) -> Result<Schema, BadSchema> {
        let plain = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !plain {
            return Err(BadSchema(name.to_owned()));
        }
        Ok(Schema {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The schema, quoted, for SQL.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }
}

/// Creates or upgrades graphile_worker's tables and `afterward_steps` in
/// `schema`. Safe to run from several processes at once, and at every start.
pub(crate) async fn migrate(pool: &PgPool, schema: &Schema) -> Result<(), Error> {
    WorkerUtils::new(pool.clone(), schema.name().to_owned())
        .migrate()
        .await?;
    let mut tx = pool.begin().await?;
    // `create table if not exists` races with itself; one migration at a time.
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("afterward_steps in {}", schema.name()))
        .execute(&mut *tx)
        .await?;
    let s = schema.quoted();
    for statement in [
        format!(
            "create table if not exists {s}.afterward_steps (
                id uuid primary key,
                chain uuid not null,
                index integer not null,
                last boolean not null,
                name text not null,
                payload json not null,
                stop_on_failure boolean not null,
                max_attempts smallint not null,
                state smallint not null default 0,
                attempts smallint not null default 0,
                last_error text,
                created_at timestamptz not null default now(),
                finished_at timestamptz
            )"
        ),
        format!(
            "create unique index if not exists afterward_steps_chain
             on {s}.afterward_steps (chain, index)"
        ),
        format!(
            "create index if not exists afterward_steps_finished
             on {s}.afterward_steps (finished_at) where last and finished_at is not null"
        ),
        format!(
            "create index if not exists afterward_steps_waiting
             on {s}.afterward_steps (created_at) where state = {waiting}",
            waiting = state::WAITING,
        ),
        done_function(s),
        // Hand-offs insert their jobs directly, naming this task by its id.
        format!(
            "insert into {s}._private_tasks (identifier) values ('{IDENTIFIER}')
             on conflict do nothing"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Schema;

    #[test]
    fn only_plain_identifiers_of_63_bytes_at_most_are_schemas() {
        assert!(Schema::new("graphile_worker").is_ok());
        assert!(Schema::new("s1").is_ok());
        assert!(Schema::new(&"a".repeat(63)).is_ok());
        for bad in ["", "$$", "a b", "1abc", "x\"y", "ünï", &"a".repeat(64)] {
            let error = Schema::new(bad).unwrap_err().to_string();
            assert!(error.contains("plain identifier"), "{bad:?}: {error}");
        }
    }
}
