//! Progress of long work (an import, `audit verify`, an agent catching up a backlog), reported
//! on stderr so stdout stays clean for results. On a terminal it is an indicatif bar; anywhere
//! else (a pipe, a log file, the journal) it is plain lines such as
//! `importing: 40000/100000 records (40%), 12,345/s`, at most one every
//! [`LINE_INTERVAL`], plus one final line from [`Progress::finish`].
//!
//! This is the one module of the shared crate that writes and reads a clock, and it does so only
//! through what it is given ([`Progress::lines`]) or, from [`Progress::new`], through stderr and
//! a monotonic [`Instant`]: the record, signing and rule code never touch it. Progress is
//! cosmetic: a failed write to stderr is ignored and never fails the work it reports on.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The least time between two plain progress lines.
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// A monotonic clock as the plain-line reporter reads it: time since an arbitrary origin.
pub type Elapsed = Box<dyn Fn() -> Duration + Send + Sync>;

/// A progress reporter; cheap to update from a hot loop, shareable between threads (`&self`).
pub struct Progress {
    sink: Sink,
}

enum Sink {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Hidden,
}

struct Lines {
    what: String,
    unit: String,
    total: Option<u64>,
    pos: u64,
    out: Box<dyn Write + Send>,
    now: Elapsed,
    started: Duration,
    /// When the last line was written (or the work started), and the position then.
    last_at: Duration,
    last_pos: u64,
    finished: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.sink {
            Sink::Bar(_) => "bar",
            Sink::Lines(_) => "lines",
            Sink::Hidden => "hidden",
        };
        f.debug_struct("Progress").field("sink", &kind).finish()
    }
}

impl Progress {
    /// Reports `what` (e.g. `"importing"`) out of `total` items, if known: a bar when stderr is
    /// a terminal, plain lines otherwise. Items are called records; see [`Progress::unit`].
    pub fn new(what: &str, total: Option<u64>) -> Progress {
        Progress::new_with_lines_to(what, total, Box::new(std::io::stderr()))
    }

    /// Like [`Progress::new`], but plain lines go to `out` (a service sends them to its log).
    pub fn new_with_lines_to(
        what: &str,
        total: Option<u64>,
        out: Box<dyn Write + Send>,
    ) -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Progress::bar(what, total)
        } else {
            let origin = Instant::now();
            Progress::lines(what, total, out, Box::new(move || origin.elapsed()))
        }
    }

    /// Plain progress lines to `out`, timed by `now` (tests pass a manual clock).
    pub fn lines(
        what: &str,
        total: Option<u64>,
        out: Box<dyn Write + Send>,
        now: Elapsed,
    ) -> Progress {
        let start = now();
        Progress {
            sink: Sink::Lines(Mutex::new(Lines {
                what: what.to_owned(),
                unit: "records".to_owned(),
                total,
                pos: 0,
                out,
                now,
                started: start,
                last_at: start,
                last_pos: 0,
                finished: false,
            })),
        }
    }

    /// A reporter that shows nothing (for `--quiet`, or work too small to report on).
    pub fn hidden() -> Progress {
        Progress { sink: Sink::Hidden }
    }

    fn bar(what: &str, total: Option<u64>) -> Progress {
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{msg}: [{bar:40}] {human_pos}/{human_len} ({percent}%), {per_sec}, eta {eta}",
            ),
            None => (
                ProgressBar::no_length(),
                "{spinner} {msg}: {human_pos}, {per_sec}, {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            sink: Sink::Bar(bar),
        }
    }

    /// Names the items counted in plain lines (`"envelopes"`, `"acknowledgements"`).
    pub fn unit(self, unit: &str) -> Progress {
        if let Sink::Lines(lines) = &self.sink {
            lock(lines).unit = unit.to_owned();
        }
        self
    }

    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        match &self.sink {
            Sink::Bar(bar) => bar.inc(n),
            Sink::Lines(lines) => {
                let mut lines = lock(lines);
                lines.pos = lines.pos.saturating_add(n);
                lines.tick();
            }
            Sink::Hidden => {}
        }
    }

    /// Sets how many items are done (for work that learns its position, not its increments).
    pub fn set(&self, pos: u64) {
        match &self.sink {
            Sink::Bar(bar) => bar.set_position(pos),
            Sink::Lines(lines) => {
                let mut lines = lock(lines);
                lines.pos = pos;
                lines.tick();
            }
            Sink::Hidden => {}
        }
    }

    /// Ends the report, whether the work finished or stopped: the bar stays on screen at its
    /// last position, plain output gets its final line (position, time taken, average rate).
    /// Only the first call reports; later ones do nothing.
    pub fn finish(&self) {
        match &self.sink {
            Sink::Bar(bar) => {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            Sink::Lines(lines) => lock(lines).finish(),
            Sink::Hidden => {}
        }
    }
}

/// Progress is cosmetic, so a panic elsewhere while the lock was held must not stop the work.
fn lock(lines: &Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    lines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lines {
    fn tick(&mut self) {
        if self.finished {
            return;
        }
        let now = (self.now)();
        let since = now.saturating_sub(self.last_at);
        if since < LINE_INTERVAL {
            return;
        }
        let rate = per_sec(self.pos.saturating_sub(self.last_pos), since);
        let line = format!("{}, {}/s", self.position(), group(rate));
        self.write(&line);
        self.last_at = now;
        self.last_pos = self.pos;
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let took = (self.now)().saturating_sub(self.started);
        let line = format!(
            "{} in {}.{} s, {}/s",
            self.position(),
            took.as_secs(),
            took.subsec_millis() / 100,
            group(per_sec(self.pos, took))
        );
        self.write(&line);
    }

    /// `40000/100000 records (40%)`, or `40000 records` when the total is unknown.
    fn position(&self) -> String {
        match self.total {
            Some(total) if total > 0 => {
                let percent = u128::from(self.pos) * 100 / u128::from(total);
                format!("{}/{} {} ({percent}%)", self.pos, total, self.unit)
            }
            Some(total) => format!("{}/{} {}", self.pos, total, self.unit),
            None => format!("{} {}", self.pos, self.unit),
        }
    }

    fn write(&mut self, line: &str) {
        // Ignored on purpose: see the module comment.
        let _ = writeln!(self.out, "{}: {line}", self.what);
        let _ = self.out.flush();
    }
}

/// Items per second over `took`, in whole items (0 for no time at all).
fn per_sec(items: u64, took: Duration) -> u64 {
    let ms = took.as_millis();
    if ms == 0 {
        return 0;
    }
    u64::try_from(u128::from(items) * 1000 / ms).unwrap_or(u64::MAX)
}

/// `12345` → `12,345`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A writer the test can read back, and a clock it moves by hand.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock_vec(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lock_vec(v: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
        v.lock().unwrap()
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(lock_vec(&self.0).clone()).unwrap()
        }
    }

    fn reporter(total: Option<u64>) -> (Progress, Shared, Arc<AtomicU64>) {
        let out = Shared::default();
        let ms = Arc::new(AtomicU64::new(1_000));
        let clock = ms.clone();
        let progress = Progress::lines(
            "importing",
            total,
            Box::new(out.clone()),
            Box::new(move || Duration::from_millis(clock.load(Ordering::SeqCst))),
        );
        (progress, out, ms)
    }

    #[test]
    fn plain_lines_come_at_most_every_interval_and_once_at_the_end() {
        let (progress, out, ms) = reporter(Some(100_000));
        progress.inc(10_000);
        ms.fetch_add(4_999, Ordering::SeqCst);
        progress.inc(10_000);
        assert_eq!(out.text(), "", "nothing before the interval has passed");

        ms.fetch_add(1, Ordering::SeqCst);
        progress.inc(20_000);
        assert_eq!(
            out.text(),
            "importing: 40000/100000 records (40%), 8,000/s\n"
        );

        ms.fetch_add(1_000, Ordering::SeqCst);
        progress.set(60_000);
        assert_eq!(out.text().lines().count(), 1, "too soon for another line");

        // The rate of a line is over the time since the previous one.
        ms.fetch_add(4_000, Ordering::SeqCst);
        progress.set(100_000);
        let text = out.text();
        assert_eq!(
            text.lines().nth(1),
            Some("importing: 100000/100000 records (100%), 12,000/s")
        );

        ms.fetch_add(500, Ordering::SeqCst);
        progress.finish();
        progress.finish();
        progress.inc(1);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[2],
            "importing: 100000/100000 records (100%) in 10.5 s, 9,523/s"
        );
    }

    #[test]
    fn short_work_gets_only_the_final_line_and_unknown_totals_no_percentage() {
        let (progress, out, ms) = reporter(None);
        let progress = progress.unit("envelopes");
        progress.inc(1_234_567);
        ms.fetch_add(2_000, Ordering::SeqCst);
        progress.finish();
        assert_eq!(
            out.text(),
            "importing: 1234567 envelopes in 2.0 s, 617,283/s\n"
        );
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(12_345), "12,345");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(per_sec(10, Duration::ZERO), 0);
    }

    #[test]
    fn a_hidden_reporter_accepts_everything() {
        let progress = Progress::hidden();
        progress.inc(5);
        progress.set(10);
        progress.finish();
    }
}
