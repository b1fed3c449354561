//! What a move reports as it goes, and the one-line bar the CLI draws from it.

/// A move's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Rows of `table` streaming from `source`; `copied` of `total` over the whole move.
    Copying {
        table: String,
        source: String,
        copied: u64,
        total: i64,
    },
    /// Changes logged on the sources and not yet applied on the target.
    CatchingUp { lag: i64 },
}

impl Progress {
    pub fn copying(table: &str, source: &str, copied: u64, total: i64) -> Progress {
        Progress::Copying {
            table: table.to_string(),
            source: source.to_string(),
            copied,
            total,
        }
    }

    pub fn catching_up(lag: i64) -> Progress {
        Progress::CatchingUp { lag }
    }

    /// The line the CLI shows, e.g.
    /// `copy  [##########----------]  50% 1200/2400 rows (accounts from s0)`.
    pub fn line(&self) -> String {
        match self {
            Progress::Copying {
                table,
                source,
                copied,
                total,
            } => {
                let total = (*total).max(*copied as i64).max(1) as u64;
                let percent = copied * 100 / total;
                format!(
                    "copy  [{}] {percent:>3}% {copied}/{total} rows ({table} from {source})",
                    bar(*copied, total)
                )
            }
            Progress::CatchingUp { lag } => format!("catch-up: {lag} changes behind"),
        }
    }
}

/// Draws progress on standard error: one line redrawn in place on a terminal, a line every two
/// seconds (and at each change of step) otherwise, so logs stay readable.
pub struct Bar {
    terminal: bool,
    last: Option<(std::time::Instant, std::mem::Discriminant<Progress>)>,
    drawn: bool,
}

impl Bar {
    pub fn new() -> Bar {
        use std::io::IsTerminal;
        Bar {
            terminal: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    pub fn show(&mut self, p: &Progress) {
        let kind = std::mem::discriminant(p);
        let due = match self.last {
            None => true,
            Some((at, k)) => {
                k != kind
                    || at.elapsed()
                        >= std::time::Duration::from_millis(if self.terminal { 100 } else { 2000 })
            }
        };
        if !due {
            return;
        }
        self.last = Some((std::time::Instant::now(), kind));
        if self.terminal {
            eprint!("\r\x1b[2K{}", p.line());
            self.drawn = true;
        } else {
            eprintln!("{}", p.line());
        }
    }

    /// Ends the redrawn line, so what follows starts on its own.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

const WIDTH: u64 = 20;

fn bar(done: u64, total: u64) -> String {
    let filled = (done * WIDTH / total.max(1)).min(WIDTH) as usize;
    format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_rows_copied() {
        let half = Progress::copying("accounts", "s0", 1200, 2400).line();
        assert_eq!(
            half,
            "copy  [##########----------]  50% 1200/2400 rows (accounts from s0)"
        );
        // A table that grew while it was counted does not overflow the bar.
        let over = Progress::copying("accounts", "s0", 30, 20).line();
        assert!(over.contains("[####################] 100% 30/30"), "{over}");
        assert_eq!(
            Progress::catching_up(7).line(),
            "catch-up: 7 changes behind"
        );
    }
}
