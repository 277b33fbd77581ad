//! What the program shows on the terminal while it works: a progress bar over images
//! (only on a terminal), warnings for skipped images, one line per training epoch; and the
//! Ctrl-C handler that asks a training run to stop.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use retrain::observe::{Event, Interrupter, Observer};

/// Draws the library's events on stderr.
pub struct Terminal {
    bars: bool,
    epoch_lines: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    /// For a command printing text: bars when stderr is a terminal, epoch lines always.
    pub fn text() -> Self {
        Self {
            bars: std::io::stderr().is_terminal(),
            epoch_lines: true,
            bar: Mutex::new(None),
        }
    }

    /// For `--json` output: warnings only.
    pub fn quiet() -> Self {
        Self {
            bars: false,
            epoch_lines: false,
            bar: Mutex::new(None),
        }
    }

    pub fn new(json: bool) -> Self {
        if json { Self::quiet() } else { Self::text() }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut bar);
    }

    /// Prints a line without tearing the progress bar.
    fn line(&self, text: &str) {
        self.with_bar(|bar| match bar {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        });
    }
}

impl Observer for Terminal {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::ImagesStarted { total } if self.bars => {
                self.with_bar(|bar| *bar = Some(progress_bar(total as u64)))
            }
            Event::ImagesDone { count } => self.with_bar(|bar| {
                if let Some(b) = bar {
                    b.inc(count as u64)
                }
            }),
            Event::ImagesFinished => self.with_bar(|bar| {
                if let Some(b) = bar.take() {
                    b.finish_and_clear()
                }
            }),
            Event::Skipped { path, why } => {
                self.line(&format!("warning: skipping {}: {why}", path.display()))
            }
            Event::FolderSkipped { path, why } => {
                self.line(&format!("warning: skipping {}: {why}", path.display()))
            }
            Event::Epoch {
                record: r,
                total_epochs,
                head_only,
            } if self.epoch_lines => self.line(&format!(
                "epoch {}/{total_epochs}{}{}: train loss {:.4} acc {:.1}%, val loss {:.4} acc {:.1}% ({:.1}s)",
                r.epoch,
                if head_only { " (head only)" } else { "" },
                r.train_crop
                    .map_or(String::new(), |c| format!(" ({c}x{c} crops)")),
                r.train_loss,
                r.train_accuracy * 100.0,
                r.val_loss,
                r.val_accuracy * 100.0,
                r.seconds
            )),
            Event::StoppedEarly { patience } if self.epoch_lines => self.line(&format!(
                "stopping: no lower validation loss for {patience} epochs"
            )),
            Event::KeptEpoch { epoch } if self.epoch_lines => {
                self.line(&format!("keeping epoch {epoch} (lowest validation loss)"))
            }
            Event::DownloadStarted {
                url,
                total,
                resumed,
            } if self.epoch_lines => {
                let size = total.map_or(String::new(), |t| format!(", {:.1} MB", t as f64 / 1e6));
                let from = if resumed > 0 {
                    format!(", resuming at {resumed} bytes")
                } else {
                    String::new()
                };
                self.line(&format!("downloading {url}{size}{from}"));
                if self.bars {
                    self.with_bar(|bar| *bar = Some(download_bar(total, resumed)));
                }
            }
            Event::Downloaded { bytes } => self.with_bar(|bar| {
                if let Some(b) = bar {
                    b.inc(bytes)
                }
            }),
            Event::DownloadFinished => self.with_bar(|bar| {
                if let Some(b) = bar.take() {
                    b.finish_and_clear()
                }
            }),
            Event::CachedFileIgnored { path, why } => {
                self.line(&format!("warning: not using {}: {why}", path.display()))
            }
            _ => {}
        }
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn download_bar(total: Option<u64>, resumed: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(resumed);
    bar
}

/// First Ctrl-C: the run finishes its batch, saves a checkpoint and exits; a second one
/// exits at once (the last checkpoint, written atomically, stays whole).
pub fn stop_on_ctrl_c(interrupter: &Interrupter) {
    let i = interrupter.clone();
    let _ = ctrlc::set_handler(move || {
        if i.stop() {
            eprintln!("\nstopped without saving the current epoch");
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this batch to save a checkpoint (Ctrl-C again to quit at once)"
        );
    });
}
