//! The tables: graphile_worker's own, and the one that keeps chains.

use graphile_worker::WorkerUtils;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

use crate::Error;

/// Creates or upgrades graphile_worker's tables and the chains table in
/// `schema`. Safe to run from several processes at once, and at every start.
pub(crate) async fn migrate(pool: &PgPool, schema: &str) -> Result<(), Error> {
    WorkerUtils::new(pool.clone(), schema.to_owned())
        .migrate()
        .await?;
    let mut tx = pool.begin().await?;
    // `create table if not exists` races with itself; one migration at a time.
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("afterward_chains in {schema}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "create table if not exists {} (
            id text primary key,
            steps jsonb not null,
            stop_on_failure boolean not null,
            max_attempts smallint not null,
            next_index integer not null default 0,
            failed_for_good integer[] not null default '{{}}',
            created_at timestamptz not null default now(),
            finished_at timestamptz
        )",
        chains_table(schema)
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `"schema".afterward_chains`, quoted.
pub(crate) fn chains_table(schema: &str) -> String {
    format!("\"{}\".afterward_chains", schema.replace('"', "\"\""))
}
