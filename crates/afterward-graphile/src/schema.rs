//! The tables: graphile_worker's own, and `afterward_steps`, one row per
//! durable task; and the schema's name, checked once.

use graphile_worker::WorkerUtils;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

use crate::Error;

/// The task identifier of every step's graphile_worker job.
pub(crate) const IDENTIFIER: &str = "afterward_step";

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
             on {s}.afterward_steps (created_at) where state = 0"
        ),
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
