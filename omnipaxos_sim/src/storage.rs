//! The simulated disk: a real storage behind the real [`Storage`] port, plus what the simulator
//! needs to see and to break. Two backends, chosen per run ([`StorageKind`]):
//!
//! ```text
//!   replica ──write_atomically / flush──► SimStorage ─┬─► CrashableStorage (volatile + durable calls)
//!                │ notes the lowest log index a write rewrote
//!                └ arms injected write / flush failures └─► PersistentStorage (the write-ahead log)
//!                                                            on SimFs (current + durable bytes)
//!   crash(DiskLoss) ──► CrashedDisk ──recover──► a new SimStorage over what survived:
//!     crashable:  durable calls + a prefix of the unflushed calls
//!     persistent: SimFs::crash(variant, seed), then PersistentStorage::open_with_fs (recovery)
//! ```
//!
//! Persistent backend: each replica (one node, one configuration) has a `SimFs` disk of its
//! own holding one data directory, `/omnipaxos/c<configuration>`; separate disks keep one
//! replica's crash from touching another's bytes and keep the per-replica structure of the
//! crashable backend. A crash loses exactly what the write-ahead log would lose on a real disk
//! under the chosen [`CrashVariant`]; the restart goes through the storage's real recovery.
//! An injected flush failure is a failing `fdatasync` of `SimFs` (the batch's bytes were
//! written, unsynced); an injected write failure is raised here, because `write_atomically`
//! only buffers and usually touches no file.
//!
//! The core writes only right before it flushes, so a crash *between* events finds every byte
//! synced and the crash variants have nothing to lose. The persistent backend therefore has a
//! third armed failure, [`ArmedFailure::CrashInFlush`]: `SimFs` records a crash point after
//! every mutating call from arming until the next flush (a segment roll in `write_atomically`,
//! the batch's write, `fdatasync`, segment removal, directory `fsync`); the flush then fails as
//! if the process died right after one of them, and the disk it leaves is that crash point's
//! image under a random [`CrashVariant`]. That is where torn tails, kept prefixes, random
//! sectors and flipped bits reach the write-ahead log's recovery.
//!
//! The replica owns its storage and lends it out only as `&B`, so the simulator's two handles
//! on it (the rewrite mark and the armed failures) are `Cell`s: set and read through `&self`.

use std::{cell::Cell, fmt, io, str::FromStr};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{StopSign, Storage, StorageError, StorageOp, StorageResult},
    util::{ConfigurationId, LogIndex, NodeId, Proposal},
};
use omnipaxos_storage::{
    crash_storage::{CrashKeep, CrashableStorage},
    persistent_storage::{
        fs::FileSystem,
        recovery::Tail,
        sim_fs::{CrashVariant, SimFs, SimOpKind},
        OpenMode, PersistentStorage, PersistentStorageConfig,
    },
};
use rand::{Rng, SeedableRng};

use crate::kv::{Command, KvSnapshot};

/// Segment size of the persistent backend: small, so that logs roll (and old segments are
/// removed after trims) many times per run.
pub const SEGMENT_SIZE_BYTES: u64 = 4096;

/// Which storage the replicas of a run use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageKind {
    /// [`CrashableStorage`]: durable and unflushed calls; a crash keeps a prefix of the calls.
    #[default]
    Crashable,
    /// [`PersistentStorage`] on [`SimFs`]: bytes, torn tails and flipped bits; real recovery.
    Persistent,
}

impl StorageKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Crashable => "crashable",
            StorageKind::Persistent => "persistent",
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StorageKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "crashable" => Ok(StorageKind::Crashable),
            "persistent" => Ok(StorageKind::Persistent),
            other => Err(format!("unknown storage `{other}` (crashable or persistent)")),
        }
    }
}

/// What a crash leaves of one replica's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskLoss {
    /// Persistent backend: the process died inside a flush, right after the mutating call
    /// `point` (counted from arming); the disk is that moment's image crashed as `variant`.
    InFlush {
        /// Index of the crash point among those recorded.
        point: usize,
        /// Crash points recorded.
        points: usize,
        /// The crash model applied to that image.
        variant: CrashVariant,
        /// Seeds `CrashPoint::crash`'s random choices.
        seed: u64,
    },
    /// Crashable backend: which unflushed calls survive.
    Calls(CrashKeep),
    /// Persistent backend: what happens to the unsynced bytes, and the seed of its choices.
    Bytes {
        /// The crash model.
        variant: CrashVariant,
        /// Seeds `SimFs::crash`'s random choices (prefix length, sectors, bit).
        seed: u64,
    },
}

impl DiskLoss {
    /// A short name for the summary: what kind of loss, without its numbers.
    pub fn name(&self) -> &'static str {
        match self {
            DiskLoss::InFlush { variant: CrashVariant::LoseUnsynced, .. } => "in-flush lose-unsynced",
            DiskLoss::InFlush { variant: CrashVariant::KeepPrefix, .. } => "in-flush keep-prefix",
            DiskLoss::InFlush { variant: CrashVariant::KeepRandomSectors, .. } => {
                "in-flush keep-random-sectors"
            }
            DiskLoss::InFlush { variant: CrashVariant::FlipUnsyncedBit, .. } => "in-flush flip-unsynced-bit",
            DiskLoss::Calls(CrashKeep::Nothing) => "keep-nothing",
            DiskLoss::Calls(CrashKeep::Prefix(_)) => "keep-prefix-of-calls",
            DiskLoss::Calls(CrashKeep::All) => "keep-all",
            DiskLoss::Bytes { variant: CrashVariant::LoseUnsynced, .. } => "lose-unsynced",
            DiskLoss::Bytes { variant: CrashVariant::KeepPrefix, .. } => "keep-prefix",
            DiskLoss::Bytes { variant: CrashVariant::KeepRandomSectors, .. } => "keep-random-sectors",
            DiskLoss::Bytes { variant: CrashVariant::FlipUnsyncedBit, .. } => "flip-unsynced-bit",
        }
    }

    /// True if a crash with this loss may make recovery report a possible loss of
    /// acknowledged state: any variant that keeps some unsynced bytes (a flipped bit, or a kept
    /// prefix or sector that ends a complete frame with bad padding, cannot be told from damage).
    pub fn may_report_possible_loss(&self) -> bool {
        match self {
            DiskLoss::Bytes { variant, .. } | DiskLoss::InFlush { variant, .. } => {
                *variant != CrashVariant::LoseUnsynced
            }
            DiskLoss::Calls(_) => false,
        }
    }

    /// A persistent-backend crash: a uniformly drawn variant and seed (`LoseUnsynced` unless
    /// `possible_loss_allowed`, see [`SimStorage::set_possible_loss_allowed`]).
    pub fn draw_bytes(rng: &mut impl Rng, possible_loss_allowed: bool) -> DiskLoss {
        let variant = CrashVariant::ALL[rng.gen_range(0..CrashVariant::ALL.len())];
        let variant = DiskLoss::allowed_variant(variant, possible_loss_allowed);
        DiskLoss::Bytes { variant, seed: rng.gen() }
    }

    /// `variant`, or `LoseUnsynced` when a possible loss is not allowed (only it keeps no
    /// unsynced byte).
    fn allowed_variant(variant: CrashVariant, possible_loss_allowed: bool) -> CrashVariant {
        match possible_loss_allowed {
            true => variant,
            false => CrashVariant::LoseUnsynced,
        }
    }
}

impl fmt::Display for DiskLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskLoss::Calls(keep) => write!(f, "{keep:?}"),
            DiskLoss::Bytes { variant, seed } => write!(f, "{variant:?}/{seed:x}"),
            DiskLoss::InFlush { point, points, variant, seed } => {
                write!(f, "in flush after call {point} of {points}, {variant:?}/{seed:x}")
            }
        }
    }
}

/// A failure armed to hit a later storage call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmedFailure {
    /// The write after this many successful writes fails.
    Write(u64),
    /// The flush after this many successful flushes fails.
    Flush(u64),
    /// Persistent backend: the process dies inside the next flush, at a crash point and with a
    /// crash variant drawn from `seed` (the crashable backend fails that flush instead).
    CrashInFlush {
        /// Seeds the choice of crash point, variant and the variant's own choices.
        seed: u64,
    },
}

type Persistent = PersistentStorage<Command, KvSnapshot, SimFs>;

enum Backend {
    Crashable(Box<CrashableStorage<Command, KvSnapshot>>),
    Persistent { storage: Box<Persistent>, config: PersistentStorageConfig },
}

/// The simulated disk of one replica.
pub struct SimStorage {
    inner: Backend,
    /// Lowest log index rewritten (truncated, replaced or compacted) since the invariant checker
    /// last took it; `LogIndex::MAX` if none.
    rewritten_from: Cell<LogIndex>,
    /// A failure counting down; handed to `inner` only for the call that must fail, so that
    /// disarming always works.
    armed: Cell<Option<ArmedFailure>>,
    /// Persistent backend: successful writes since the last successful flush.
    unflushed_writes: usize,
    /// Persistent backend: an injected failure hit; fail-stop like the storage itself.
    injected_poison: bool,
    /// Persistent backend: the process died inside a flush; the disk it left, and how.
    interrupted: Option<(SimFs, DiskLoss)>,
    /// A crash may keep unsynced bytes (see [`SimStorage::set_possible_loss_allowed`]).
    possible_loss_allowed: Cell<bool>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimStorage")
            .field("kind", &self.kind())
            .field("unflushed_calls", &self.unflushed_calls())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::over(Backend::Crashable(Box::default()))
    }
}

/// A disk after a crash, before the restarted process opens it.
pub enum CrashedDisk {
    /// Crashable backend: the storage as the crash left it.
    Crashable(Box<SimStorage>),
    /// Persistent backend: the file system the crash left, and where the log lives.
    Persistent {
        /// The disk after the crash.
        fs: SimFs,
        /// The log's configuration (in `OpenMode::Restart`: a restart never re-creates).
        config: PersistentStorageConfig,
    },
}

/// How an amnesia fault damages a replica's disk (the process is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amnesia {
    /// The whole data directory is gone (crashable backend: the disk is empty).
    Wiped,
    /// Persistent backend: the newest segment file is cut to a random length (or removed),
    /// durably, as a failing disk or an operator's mistake might (crashable backend: wiped).
    Truncated {
        /// Seeds the choice of file and length.
        seed: u64,
    },
}

impl fmt::Display for Amnesia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amnesia::Wiped => write!(f, "wiped"),
            Amnesia::Truncated { seed } => write!(f, "truncated/{seed:x}"),
        }
    }
}

impl CrashedDisk {
    /// The disk after `amnesia`: state the replica acknowledged is gone. Also says what was
    /// done, for the trace.
    pub fn damaged(self, amnesia: Amnesia) -> (CrashedDisk, String) {
        match (self, amnesia) {
            (CrashedDisk::Crashable(_), _) => (CrashedDisk::Crashable(Box::default()), "emptied".into()),
            (CrashedDisk::Persistent { config, .. }, Amnesia::Wiped) => {
                let what = format!("{} wiped", config.path.display());
                (CrashedDisk::Persistent { fs: SimFs::new(), config }, what)
            }
            (CrashedDisk::Persistent { fs, config }, Amnesia::Truncated { seed }) => {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
                let mut segments = fs.list_files(&config.path).unwrap_or_default();
                segments.retain(|name| name.starts_with("wal-") && name.ends_with(".log"));
                segments.sort();
                let Some(last) = segments.last() else {
                    return (CrashedDisk::Persistent { fs, config }, "no segment to cut".into());
                };
                let path = config.path.join(last);
                let length = fs.file_bytes(&path).map_or(0, |bytes| bytes.len());
                let what = if length == 0 || rng.gen_bool(0.25) {
                    fs.remove_durably(&path);
                    format!("{} removed ({length} bytes)", path.display())
                } else {
                    let cut = rng.gen_range(0..length);
                    fs.truncate_durably(&path, cut);
                    format!("{} cut from {length} to {cut} bytes", path.display())
                };
                (CrashedDisk::Persistent { fs, config }, what)
            }
        }
    }

    /// The restarted process opens its disk; for the persistent backend this runs the
    /// write-ahead log's recovery, whose refusal is an error to report.
    pub fn recover(self) -> Result<SimStorage, String> {
        match self {
            CrashedDisk::Crashable(storage) => Ok(*storage),
            CrashedDisk::Persistent { fs, config } => match Persistent::open_with_fs(&config, fs.clone()) {
                Ok(storage) => {
                    Ok(SimStorage::over(Backend::Persistent { storage: Box::new(storage), config }))
                }
                Err(e) => Err(format!("PersistentStorage refuses to open {}: {e}", config.path.display())),
            },
        }
    }
}

impl SimStorage {
    fn over(inner: Backend) -> Self {
        SimStorage {
            inner,
            rewritten_from: Cell::new(LogIndex::MAX),
            armed: Cell::new(None),
            unflushed_writes: 0,
            injected_poison: false,
            interrupted: None,
            possible_loss_allowed: Cell::new(true),
        }
    }

    /// A fresh, empty disk of `kind` for `pid`'s replica of configuration `config_id`.
    pub fn new(kind: StorageKind, pid: NodeId, config_id: ConfigurationId) -> SimStorage {
        SimStorage::fresh(kind, pid, config_id, OpenMode::Bootstrap)
    }

    /// A fresh disk for a replica that had history and lost it: the persistent backend opens
    /// an empty directory with `OpenMode::Replace`, so the new log records the possible loss
    /// (`acknowledged_state_may_be_lost`, sticky); the crashable backend has no such signal.
    pub fn replaced(kind: StorageKind, pid: NodeId, config_id: ConfigurationId) -> SimStorage {
        SimStorage::fresh(kind, pid, config_id, OpenMode::Replace)
    }

    fn fresh(kind: StorageKind, pid: NodeId, config_id: ConfigurationId, mode: OpenMode) -> SimStorage {
        match kind {
            StorageKind::Crashable => SimStorage::default(),
            StorageKind::Persistent => {
                let config = PersistentStorageConfig::new(format!("/omnipaxos/c{config_id}"), config_id, pid)
                    .segment_size_bytes(SEGMENT_SIZE_BYTES)
                    .mode(mode);
                let storage = Persistent::open_with_fs(&config, SimFs::new()).expect("an empty SimFs opens");
                assert!(storage.open_report().created);
                let config = config.mode(OpenMode::Restart);
                SimStorage::over(Backend::Persistent { storage: Box::new(storage), config })
            }
        }
    }

    /// True if the storage reports that state it acknowledged may be lost (persistent backend:
    /// a recovered tail it cannot vouch for, or a replaced log; sticky until resolved). Such a
    /// replica must restart as a learner.
    pub fn acknowledged_state_may_be_lost(&self) -> bool {
        match &self.inner {
            Backend::Crashable(_) => false,
            Backend::Persistent { storage, .. } => storage.open_report().acknowledged_state_may_be_lost(),
        }
    }

    /// Whether a crash of this disk may keep some unsynced bytes (a flipped bit, a torn frame:
    /// recovery may report a possible loss, making the replica a learner). The simulator
    /// forbids it while another replica of the same configuration is (or may become) a learner,
    /// to stay within the tolerated minority, and in a configuration whose log it trimmed (no
    /// new learner could catch up there); a forbidden crash loses the unsynced bytes instead.
    pub fn set_possible_loss_allowed(&self, allowed: bool) {
        self.possible_loss_allowed.set(allowed);
    }

    /// See [`SimStorage::set_possible_loss_allowed`].
    pub fn possible_loss_allowed(&self) -> bool {
        self.possible_loss_allowed.get()
    }

    /// The backend.
    pub fn kind(&self) -> StorageKind {
        match self.inner {
            Backend::Crashable(_) => StorageKind::Crashable,
            Backend::Persistent { .. } => StorageKind::Persistent,
        }
    }

    /// The disk a restarted process finds after a crash now (crashable backend only).
    pub fn crash(&self, keep: CrashKeep) -> SimStorage {
        match self.crash_disk(DiskLoss::Calls(keep)) {
            CrashedDisk::Crashable(storage) => *storage,
            CrashedDisk::Persistent { .. } => unreachable!("a crashable disk crashes into one"),
        }
    }

    /// What the write-ahead log's recovery repaired when this disk was opened, as
    /// `(summary name, trace detail)`: a torn tail dropped, a complete bad frame dropped and
    /// reported as a possible loss of acknowledged data (the storage cannot tell a flipped bit
    /// of an unsynced write from damage), stray files removed. Empty for the crashable backend
    /// and for a clean open.
    pub fn recovery_findings(&self) -> Vec<(&'static str, String)> {
        let Backend::Persistent { storage, .. } = &self.inner else { return Vec::new() };
        let report = storage.open_report();
        let mut findings = Vec::new();
        if let Tail::Torn { file, offset, bytes, reason } = &report.tail {
            let detail =
                format!("torn tail of {} at {offset}: {bytes} bytes dropped ({reason})", file.display());
            findings.push(("recovered-torn-tail", detail));
        }
        if let Tail::PossibleLoss { file, offset, bytes, lsn, reason } = &report.tail {
            let detail = format!(
                "possible loss at {} {offset} (lsn {lsn}): {bytes} bytes dropped ({reason})",
                file.display()
            );
            findings.push(("recovered-possible-loss", detail));
        }
        if !report.removed_strays.is_empty() {
            findings
                .push(("recovered-stray-files", format!("stray files removed: {:?}", report.removed_strays)));
        }
        findings
    }

    /// How the process died inside a flush, if it did: the loss a crash now must use.
    pub fn interrupted(&self) -> Option<DiskLoss> {
        self.interrupted.as_ref().map(|(_, loss)| *loss)
    }

    /// The disk a restarted process finds after a crash now. Panics if `loss` is not of this
    /// storage's kind, or not the interruption that happened (a programmer error).
    pub fn crash_disk(&self, loss: DiskLoss) -> CrashedDisk {
        match (&self.inner, loss) {
            (Backend::Persistent { config, .. }, DiskLoss::InFlush { .. }) => {
                let (fs, interrupted) = self.interrupted.as_ref().expect("the process died inside a flush");
                assert_eq!(*interrupted, loss, "a crash inside a flush loses what it lost");
                CrashedDisk::Persistent { fs: fs.clone(), config: config.clone() }
            }
            (Backend::Crashable(inner), DiskLoss::Calls(keep)) => CrashedDisk::Crashable(Box::new(
                SimStorage::over(Backend::Crashable(Box::new(inner.crash(keep)))),
            )),
            (Backend::Persistent { storage, config }, DiskLoss::Bytes { variant, seed }) => {
                CrashedDisk::Persistent { fs: storage.fs().crash(variant, seed), config: config.clone() }
            }
            (_, loss) => panic!("a {} disk cannot lose {loss}", self.kind()),
        }
    }

    /// Successful writes a crash could still lose.
    pub fn unflushed_calls(&self) -> usize {
        match &self.inner {
            Backend::Crashable(inner) => inner.unflushed_calls(),
            Backend::Persistent { .. } => self.unflushed_writes,
        }
    }

    /// Arms a failure for a later write or flush (fail-stop: the storage then refuses all), or
    /// disarms with `None`.
    pub fn arm(&self, failure: Option<ArmedFailure>) {
        if let Backend::Persistent { storage, .. } = &self.inner {
            // Crash points are recorded only while a crash inside a flush is armed.
            let _ = storage.fs().take_crash_points();
            if let Some(ArmedFailure::CrashInFlush { .. }) = failure {
                storage.fs().capture_crash_points();
            }
        }
        self.armed.set(failure);
    }

    /// Takes the lowest index rewritten since the last call (`LogIndex::MAX`: none).
    pub fn take_rewritten_from(&self) -> LogIndex {
        self.rewritten_from.replace(LogIndex::MAX)
    }

    /// Marks the log rewritten from `from`, as a truncating write would (tests of the checker).
    pub fn mark_rewritten(&self, from: LogIndex) {
        self.rewritten_from.set(self.rewritten_from.get().min(from));
    }

    /// True once a write or flush failed.
    pub fn is_poisoned(&self) -> bool {
        match &self.inner {
            Backend::Crashable(inner) => inner.is_poisoned(),
            Backend::Persistent { storage, .. } => self.injected_poison || storage.is_poisoned(),
        }
    }

    /// Counts one write (or flush) down; the failure if this very call must fail.
    fn count_down(&self, is_write: bool) -> Option<ArmedFailure> {
        let (next, fire) = match self.armed.get() {
            Some(failure @ ArmedFailure::Write(0)) if is_write => (None, Some(failure)),
            Some(failure @ (ArmedFailure::Flush(0) | ArmedFailure::CrashInFlush { .. })) if !is_write => {
                (None, Some(failure))
            }
            Some(ArmedFailure::Write(n)) if is_write => (Some(ArmedFailure::Write(n - 1)), None),
            Some(ArmedFailure::Flush(n)) if !is_write => (Some(ArmedFailure::Flush(n - 1)), None),
            other => (other, None),
        };
        self.armed.set(next);
        fire
    }

    fn note_rewrites(&self, ops: &[StorageOp<Command, KvSnapshot>]) {
        for op in ops {
            let from = match op {
                StorageOp::AppendOnPrefix(from, _) => *from,
                StorageOp::Trim(idx) => *idx,
                _ => continue,
            };
            self.rewritten_from.set(self.rewritten_from.get().min(from));
        }
    }

    fn port(&self) -> &dyn Storage<Command, KvSnapshot> {
        match &self.inner {
            Backend::Crashable(inner) => inner.as_ref(),
            Backend::Persistent { storage, .. } => storage.as_ref(),
        }
    }

    fn injected<V>(&mut self, what: &'static str) -> StorageResult<V> {
        self.injected_poison = true;
        Err(StorageError::Io(io::Error::other(what)))
    }

    fn write_persistent(
        &mut self,
        ops: &mut Vec<StorageOp<Command, KvSnapshot>>,
        fail: Option<ArmedFailure>,
    ) -> StorageResult<()> {
        if self.injected_poison {
            return Err(StorageError::Poisoned);
        }
        if fail.is_some() {
            return self.injected("injected write failure");
        }
        let Backend::Persistent { storage, .. } = &mut self.inner else { unreachable!("persistent") };
        storage.write_atomically(ops)?;
        self.unflushed_writes += 1;
        Ok(())
    }

    /// A failing flush is a failing `fdatasync` of the active segment, after the batch was
    /// written. With nothing to sync the storage would not call `fdatasync`: the flush fails
    /// here instead, and a fault left armed in `SimFs` dies with it at the crash that follows
    /// (a crashed `SimFs` starts without faults; the poisoned storage touches no file).
    fn flush_persistent(&mut self, fail: Option<ArmedFailure>) -> StorageResult<()> {
        if self.injected_poison {
            return Err(StorageError::Poisoned);
        }
        let Backend::Persistent { storage, .. } = &mut self.inner else { unreachable!("persistent") };
        if let Some(ArmedFailure::CrashInFlush { seed }) = fail {
            let _ = storage.flush();
            let points = storage.fs().take_crash_points();
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let variant = CrashVariant::ALL[rng.gen_range(0..CrashVariant::ALL.len())];
            let variant = DiskLoss::allowed_variant(variant, self.possible_loss_allowed.get());
            let crash_seed = rng.gen();
            let (disk, point) = match points.len() {
                // The flush touched no file (nothing to sync): the process dies right after it.
                0 => (storage.fs().crash(variant, crash_seed), 0),
                n => {
                    let point = rng.gen_range(0..n);
                    (points[point].crash(variant, crash_seed), point)
                }
            };
            let loss = DiskLoss::InFlush { point, points: points.len(), variant, seed: crash_seed };
            self.interrupted = Some((disk, loss));
            return self.injected("injected crash inside a flush");
        }
        if fail.is_some() {
            storage.fs().fail_op(SimOpKind::SyncData, 0);
        }
        let result = storage.flush();
        match (result, fail) {
            (Ok(()), Some(_)) => self.injected("injected fdatasync failure"),
            (Ok(()), None) => {
                self.unflushed_writes = 0;
                Ok(())
            }
            (Err(e), _) => Err(e),
        }
    }
}

impl Storage<Command, KvSnapshot> for SimStorage {
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<Command, KvSnapshot>>) -> StorageResult<()> {
        let fail = self.count_down(true);
        self.note_rewrites(ops);
        match &mut self.inner {
            Backend::Crashable(inner) => {
                if fail.is_some() {
                    inner.fail_write_after(0);
                }
                inner.write_atomically(ops)
            }
            Backend::Persistent { .. } => self.write_persistent(ops, fail),
        }
    }

    fn flush(&mut self) -> StorageResult<()> {
        let fail = self.count_down(false);
        match &mut self.inner {
            Backend::Crashable(inner) => {
                if fail.is_some() {
                    inner.fail_flush_after(0);
                }
                inner.flush()
            }
            Backend::Persistent { .. } => self.flush_persistent(fail),
        }
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<Command>>> {
        self.port().get_entries(from, to)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.port().get_log_end()
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.port().get_compacted_idx()
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.port().get_promise()
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.port().get_accepted_round()
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.port().get_decided_idx()
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.port().get_stopsign()
    }

    fn get_snapshot(&self) -> StorageResult<Option<KvSnapshot>> {
        self.port().get_snapshot()
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        self.port().get_incarnation()
    }

    fn get_identity(&self) -> StorageResult<Option<omnipaxos_core::storage::ReplicaIdentity>> {
        self.port().get_identity()
    }
}
