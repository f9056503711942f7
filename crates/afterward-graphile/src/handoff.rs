//! Hand-offs stored together: the chains of hand-offs that arrive while
//! others are being stored go in one transaction, whose commit they share.
//! Each hand-off still gets its own answer, and the answer is exact: a
//! chain is reported not stored only if its transaction surely did not
//! commit.

use std::sync::Arc;
use std::time::Duration;

use afterward::FailurePolicy;
use afterward::durable::{Chain, PersistError, Unconfirmed};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::batches::Batches;
use crate::sql::Statements;

/// How many batches may be stored at once: one running its statement
/// while another waits for its commit; the next gathers what arrives
/// meanwhile. More would split the waiting hand-offs into smaller batches
/// (measured by the `durable` bench: 2 stores the most).
const IN_FLIGHT: usize = 2;

/// The rows of steps to store, column by column, as the store statement
/// takes them.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    ids: Vec<String>,
    chains: Vec<String>,
    indexes: Vec<i32>,
    lasts: Vec<bool>,
    names: Vec<String>,
    payloads: Vec<String>,
    stops: Vec<bool>,
    max_attempts: Vec<i16>,
}

impl Rows {
    /// The rows of `chain`'s steps.
    pub(crate) fn of(chain: &Chain, max_attempts: i16) -> Rows {
        let mut rows = Rows::default();
        rows.add(chain, max_attempts);
        rows
    }

    pub(crate) fn add(&mut self, chain: &Chain, max_attempts: i16) {
        let n = chain.steps().len();
        for (index, step) in chain.steps().iter().enumerate() {
            self.ids.push(step.id().to_string());
            self.chains.push(chain.id().to_owned());
            self.indexes.push(index as i32);
            self.lasts.push(index + 1 == n);
            self.names.push(step.name().to_owned());
            self.payloads.push(step.payload().to_string());
            self.stops.push(chain.policy() == FailurePolicy::StopQueue);
            self.max_attempts.push(max_attempts);
        }
    }

    fn append(&mut self, other: Rows) {
        self.ids.extend(other.ids);
        self.chains.extend(other.chains);
        self.indexes.extend(other.indexes);
        self.lasts.extend(other.lasts);
        self.names.extend(other.names);
        self.payloads.extend(other.payloads);
        self.stops.extend(other.stops);
        self.max_attempts.extend(other.max_attempts);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Stores `rows` with the store statement on `conn`, in whatever
/// transaction it is in; returns the transaction's id.
pub(crate) async fn store(
    statements: &Statements,
    conn: &mut PgConnection,
    rows: &Rows,
) -> Result<i64, sqlx::Error> {
    let (_, xid): (i64, i64) = sqlx::query_as(AssertSqlSafe(statements.store.as_str()))
        .bind(&rows.ids)
        .bind(&rows.chains)
        .bind(&rows.indexes)
        .bind(&rows.lasts)
        .bind(&rows.names)
        .bind(&rows.payloads)
        .bind(&rows.stops)
        .bind(&rows.max_attempts)
        .fetch_one(conn)
        .await?;
    Ok(xid)
}

/// What batches of hand-offs need.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pool: PgPool,
    pub(crate) statements: Arc<Statements>,
    /// How long getting a connection and running the statements may take,
    /// before the commit is sent.
    pub(crate) timeout: Duration,
    /// How long to wait for a commit's answer, and then to look its fate
    /// up, before giving up on knowing.
    pub(crate) confirm: Duration,
    /// The most steps one transaction stores.
    pub(crate) max_batch: usize,
}

/// Hand-offs on their way to be stored together.
#[derive(Debug)]
pub(crate) struct Batcher {
    batches: Batches<Rows, Result<(), PersistError>>,
}

impl Batcher {
    /// Starts the task that stores batches, on the current runtime.
    pub(crate) fn start(settings: Arc<Settings>) -> Batcher {
        let max = settings.max_batch;
        let in_flight = if max > 1 {
            IN_FLIGHT
        } else {
            settings.pool.options().get_max_connections() as usize
        };
        let batches = Batches::start(in_flight, max, move |hand_offs: Vec<Rows>| {
            let settings = settings.clone();
            async move {
                let n = hand_offs.len();
                let mut rows = Rows::default();
                hand_offs.into_iter().for_each(|one| rows.append(one));
                let answer = store_exactly(&settings, &rows).await;
                (0..n)
                    .map(|_| match &answer {
                        Ok(()) => Ok(()),
                        Err(Fate::NotStored(error)) => Err(error.clone().into()),
                        Err(Fate::Unknown(reason)) => {
                            Err(Box::new(Unconfirmed::new(reason.clone())) as PersistError)
                        }
                    })
                    .collect()
            }
        });
        Batcher { batches }
    }

    /// Stores `rows` with whatever else arrives meanwhile; answers once
    /// their transaction's fate is known.
    pub(crate) async fn store(&self, rows: Rows) -> Result<(), PersistError> {
        let size = rows.len();
        self.batches.call(rows, size).await?
    }
}

/// Why a batch was not reported stored.
enum Fate {
    NotStored(String),
    Unknown(String),
}

/// Stores `rows` in one transaction. The time limit covers getting a
/// connection and running the statement, never a commit already sent: past
/// that point the transaction may commit, so its answer is waited for, and
/// if it is lost (the connection dropped, or no answer in time) the
/// transaction's fate is looked up by its id.
async fn store_exactly(settings: &Settings, rows: &Rows) -> Result<(), Fate> {
    let statements = async {
        let mut tx = settings.pool.begin().await?;
        let xid = store(&settings.statements, &mut tx, rows).await?;
        Ok::<_, sqlx::Error>((tx, xid))
    };
    let (tx, xid) = match tokio::time::timeout(settings.timeout, statements).await {
        Err(_) => {
            return Err(Fate::NotStored(format!(
                "the hand-off timed out after {:?} before its commit was sent",
                settings.timeout
            )));
        }
        Ok(Err(error)) => return Err(Fate::NotStored(error.to_string())),
        Ok(Ok(sent)) => sent,
    };
    let lost = match tokio::time::timeout(settings.confirm, tx.commit()).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer to the commit within {:?}", settings.confirm),
    };
    confirm(settings, xid, &lost).await
}

/// Looks up whether transaction `xid` committed, until the database says
/// or `settings.confirm` has passed.
async fn confirm(settings: &Settings, xid: i64, lost: &str) -> Result<(), Fate> {
    let give_up = tokio::time::Instant::now() + settings.confirm;
    loop {
        let asked = tokio::time::timeout(Duration::from_secs(2), async {
            let (status,): (Option<String>,) = sqlx::query_as("select txid_status($1)::text")
                .bind(xid)
                .fetch_one(&settings.pool)
                .await?;
            Ok::<_, sqlx::Error>(status)
        })
        .await;
        match asked {
            Ok(Ok(Some(status))) if status == "committed" => return Ok(()),
            Ok(Ok(Some(status))) if status == "aborted" => {
                return Err(Fate::NotStored(format!(
                    "{lost}; the database then said the transaction did not commit"
                )));
            }
            Ok(Ok(None)) => {
                return Err(Fate::Unknown(format!(
                    "{lost}, and the transaction is too old for the database to say how it ended"
                )));
            }
            // In progress, or the database did not answer: ask again.
            _ => {}
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(Fate::Unknown(format!(
                "{lost}, and the database could not say how the transaction ended within {:?}",
                settings.confirm
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
