//! The async face of the [`Store`]: one writer thread owns the only write connection and runs
//! jobs one at a time from a bounded queue (an actor), replying on a oneshot; reads run on a
//! small pool of query-only connections inside `spawn_blocking`. No connection is ever held
//! across an `.await`, and a caller learns of a write only after it has committed.
//!
//! With SQLite, a third thread copies the WAL into the database file after commits
//! (`wal_checkpoint(PASSIVE)` on its own connection), so the writer never does that work itself
//! while agents wait (unless the checkpointer falls far behind: see
//! [`SqliteStore::leave_checkpoints_to_another_connection`]).
//!
//! Callers hand [`Db::write`] a closure over `&mut dyn Writes` and get its result once it has
//! committed; they never see the transaction itself, so a later group-commit writer can run
//! several such closures in one transaction (each under a savepoint) without changing any
//! caller.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::store::{self, Reads, SqliteStore, Store, StoreError, Writes};

/// How many write jobs may wait for the writer before callers are made to wait.
const WRITE_QUEUE: usize = 256;
/// How many idle read connections are kept open.
const MAX_IDLE_READERS: usize = 4;

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;
type Opener = Arc<dyn Fn() -> Result<Box<dyn Store>, StoreError> + Send + Sync>;

/// A cheap, cloneable handle to the hub database.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

struct ReaderPool {
    open: Opener,
    idle: Mutex<Vec<Box<dyn Store>>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Box<dyn Store>, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => (self.open)(),
        }
    }

    fn give_back(&self, conn: Box<dyn Store>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

impl Db {
    /// Opens the SQLite database in `data_dir` (creating and migrating it if need be) and
    /// starts its writer thread.
    pub fn open_sqlite(data_dir: &Path) -> Result<Db, StoreError> {
        Db::start_sqlite(SqliteStore::open(data_dir)?, data_dir)
    }

    /// Starts the writer thread over an open connection to the database in `data_dir`, and
    /// the checkpointer thread.
    pub fn start_sqlite(writer: SqliteStore, data_dir: &Path) -> Result<Db, StoreError> {
        let dir = data_dir.to_owned();
        let open: Opener =
            Arc::new(move || SqliteStore::open_reader(&dir).map(|s| Box::new(s) as Box<dyn Store>));
        let checkpointer = SqliteStore::open_checkpointer(data_dir)?;
        writer.leave_checkpoints_to_another_connection()?;
        let (committed, wake) = std::sync::mpsc::sync_channel(1);
        spawn("hub-db-checkpoint", move || {
            run_checkpointer(&checkpointer, &wake)
        })?;
        Db::start_with(Box::new(writer), open, Some(committed))
    }

    /// Starts the writer thread over `writer`; `open_reader` makes read connections on demand.
    pub fn start(writer: Box<dyn Store>, open_reader: Opener) -> Result<Db, StoreError> {
        Db::start_with(writer, open_reader, None)
    }

    fn start_with(
        writer: Box<dyn Store>,
        open_reader: Opener,
        committed: Option<SyncSender<()>>,
    ) -> Result<Db, StoreError> {
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE);
        spawn("hub-db-writer", move || run_writer(writer, rx, committed))?;
        Ok(Db {
            jobs,
            readers: Arc::new(ReaderPool {
                open: open_reader,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` in one write transaction on the writer thread; returns once it has committed
    /// (or rolled back, if `f` failed).
    pub async fn write<R, E>(
        &self,
        f: impl FnOnce(&mut dyn Writes) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |s: &mut dyn Store| {
            // The caller may have gone away; the transaction stands either way.
            let _ = reply.send(store::write(s, f));
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs `f` against one consistent snapshot on a read connection.
    pub async fn read<R, E>(
        &self,
        f: impl FnOnce(&dyn Reads) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.take()?;
            let out = store::read(conn.as_mut(), f);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Waits until every write queued before this call has finished.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |_: &mut dyn Store| {
            let _ = reply.send(());
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| StoreError::Backend(format!("cannot start the thread {name}: {e}")))
}

fn run_writer(
    mut store: Box<dyn Store>,
    mut jobs: mpsc::Receiver<Job>,
    committed: Option<SyncSender<()>>,
) {
    while let Some(job) = jobs.blocking_recv() {
        // A panicking job rolls its transaction back (the guard drops) and its caller sees the
        // reply channel close; the writer itself carries on for everyone else.
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| job(store.as_mut())));
        if run.is_err() {
            tracing::error!("a database write job panicked; its transaction was rolled back");
        }
        if let Some(wake) = &committed {
            // Full: a wake-up is already pending, which covers this commit too.
            let _ = wake.try_send(());
        }
    }
}

/// Checkpoints after commits until the writer stops (its sender is dropped).
fn run_checkpointer(store: &SqliteStore, wake: &Receiver<()>) {
    while wake.recv().is_ok() {
        if let Err(e) = store.checkpoint() {
            // The writer's backstop checkpoint covers for a failing checkpointer.
            tracing::warn!(error = %e, "cannot checkpoint the WAL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::County;
    use tongbu_shared::CountyCode;

    #[tokio::test]
    async fn writes_are_visible_to_later_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(dir.path()).unwrap();
        let code = CountyCode::parse("430112").unwrap();
        let c = County {
            code: code.clone(),
            name: "望城区".into(),
            created_at_ms: 1,
        };
        db.write(move |w| w.insert_county(&c)).await.unwrap();
        let found = db
            .read(move |r| r.county(&code))
            .await
            .unwrap()
            .expect("county stored");
        assert_eq!(found.name, "望城区");
        db.flush().await.unwrap();
    }

    #[tokio::test]
    async fn another_connection_can_write_while_the_hub_runs() {
        // What `tongbu-hub county add` does while `serve` holds the database open.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(dir.path()).unwrap();
        db.write(|w| w.ping()).await.unwrap();
        let mut cli = SqliteStore::open(dir.path()).unwrap();
        let code = CountyCode::parse("431281").unwrap();
        let c = County {
            code: code.clone(),
            name: "洪江市".into(),
            created_at_ms: 1,
        };
        store::write(&mut cli, |w| w.insert_county(&c)).unwrap();
        let found = db.read(move |r| r.county(&code)).await.unwrap();
        assert!(found.is_some());
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(dir.path()).unwrap();
        let r: Result<(), StoreError> = db.write(|_| panic!("boom")).await;
        assert!(matches!(r, Err(StoreError::WriterStopped)));
        db.write(|w| w.ping()).await.unwrap();
    }
}
