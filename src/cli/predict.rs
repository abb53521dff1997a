//! `bootstrap predict INPUT [-o OUTPUT] [--review PAGE.html]`: a whole file of buildings,
//! locally, through the Lambda handler's own path — `App::init` once, then `App::predict`
//! (imagery, batching, the register's listing) chunk after chunk, in input order, each
//! building exactly once — with the output written as it goes. A chunk is what one request
//! may hold (`MAX_BUILDINGS`, 1,000 by default): a local run is a series of requests.
//!
//! Memory stays flat whatever the input's size: the input is read on its own thread into a
//! bounded channel, a chunk is predicted and written before the next is taken, and the review
//! page keeps a bounded set of candidate cards. Ctrl-C (or SIGTERM) stops after the chunk in
//! flight, leaving a valid output and the command that resumes it; `--resume` checks that the
//! output's buildings are the input's first ones, then goes on after them.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::predict_args::Args;
use super::progress::{Printer, Progress};
use super::summary::{Summary, peak_memory_mb};
use crate::app::App;
use crate::error::StartupError;
use crate::files::read::{self, Input};
use crate::files::resume::{self, Existing};
use crate::files::write::{Destination, Writer};
use crate::files::{FileError, OutputFormat, id_key};
use crate::review::{Picker, Register, page};

/// Exit code after an interruption (as shells report a SIGINT).
const INTERRUPTED: u8 = 130;

/// Checks the files, loads the model (`init`), runs. Usage and file problems exit 2 before
/// the model loads; a failed init exits 1.
pub async fn main(args: Args, init: impl Future<Output = Result<App, StartupError>>) -> ExitCode {
    let plan = match Plan::prepare(&args) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let app = match init.await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("error: init failed ({}): {error}", error.error_type());
            return ExitCode::FAILURE;
        }
    };
    plan.run(&app, &args).await
}

/// A run whose files have been checked.
struct Plan {
    input: Input,
    /// The input's size, counted on a thread while the model loads.
    count: std::thread::JoinHandle<Result<usize, FileError>>,
    destination: Destination,
    format: OutputFormat,
    /// What an earlier run left in the output (`--resume`).
    existing: Option<Existing>,
}

impl Plan {
    fn prepare(args: &Args) -> Result<Self, FileError> {
        let (destination, format) = match &args.output {
            Some(path) => (Destination::File(path.clone()), OutputFormat::of(path)?),
            None => (Destination::Stdout, OutputFormat::JsonLines),
        };
        for path in [args.output.as_deref(), args.review.as_deref()]
            .into_iter()
            .flatten()
        {
            check_directory(path)?;
        }
        let input = read::open(&args.input)?;
        let existing = match (&args.output, args.resume) {
            (Some(path), true) => resume::scan(path, format)?,
            _ => None,
        };
        let counted = input.clone();
        let count = std::thread::spawn(move || counted.count());
        Ok(Self {
            input,
            count,
            destination,
            format,
            existing,
        })
    }

    async fn run(self, app: &App, args: &Args) -> ExitCode {
        match self.predict_all(app, args).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    }

    async fn predict_all(self, app: &App, args: &Args) -> Result<ExitCode, FileError> {
        let total = self.count.join().unwrap_or_else(|_| {
            Err(FileError::invalid(
                &args.input,
                "the counting thread failed",
            ))
        })?;
        let existing = self.existing;
        let skip = existing.as_ref().map_or(0, |e| e.ids.len());
        if skip > total {
            return Err(FileError::invalid(
                &args.input,
                format!(
                    "{} already holds {skip} buildings, the input only {total}: it was written \
                     from another input; write to a new file instead of resuming",
                    self.destination.display()
                ),
            ));
        }
        if args.resume {
            eprintln!(
                "resuming: {} already answers {} of {} buildings",
                self.destination.display(),
                page::thousands(skip),
                page::thousands(total)
            );
        }
        let chunk_size = app.config.max_buildings;
        let mut feed = self.input.feed(2 * chunk_size);
        if let Some(existing) = &existing {
            verify_prefix(&mut feed, existing, args, chunk_size).await?;
        }

        let register = app.registry().map(|r| Register {
            positive_label: r.settings.positive_label.clone(),
        });
        let mut writer = Writer::create(
            self.destination.clone(),
            self.format,
            &self.input.echo(),
            &app.model_info,
            app.registry().is_some(),
            existing.as_ref(),
        )?;
        let labels = app.model_info.labels.clone();
        let mut picker = args
            .review
            .as_ref()
            .map(|_| Picker::new(args.review_limit, labels.clone(), register.clone()));
        let mut summary = Summary::new(
            labels,
            app.registry().map(crate::registry::answer::Summary::new),
        );
        let mut progress = Progress::start(total, skip);
        let stop = watch_interrupts(progress.printer());
        let started = Instant::now();
        let mut order = skip;
        let mut failure = None;
        let mut interrupted = false;
        loop {
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let chunk = match feed.next_chunk(chunk_size).await {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => chunk,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let (buildings, sources): (Vec<_>, Vec<_>) =
                chunk.into_iter().map(|i| (i.building, i.source)).unzip();
            let cutoff = crate::handler::cutoff(None, app.config.deadline_margin);
            let (outcomes, _timing, chips) = if picker.is_some() {
                app.predict_with_chips(&buildings, cutoff, Instant::now())
                    .await
            } else {
                let (outcomes, timing) = app.predict(&buildings, cutoff, Instant::now()).await;
                (outcomes, timing, Vec::new())
            };
            if let Err(error) = writer.write(&buildings, &sources, &outcomes) {
                failure = Some(error);
                break;
            }
            summary.add(&outcomes);
            progress.advance(outcomes.len(), crate::outcome::failed(&outcomes));
            if let Some(mut p) = picker.take() {
                let first = order;
                picker = tokio::task::spawn_blocking(move || {
                    for (i, (b, o)) in buildings.iter().zip(&outcomes).enumerate() {
                        p.offer(first + i, b, o, chips.get(i).and_then(Option::as_ref));
                    }
                    p
                })
                .await
                .ok();
            }
            order += sources.len();
        }
        let elapsed = started.elapsed();
        progress.finish();
        let written = writer.written();
        writer.finish()?;

        let mut lines = summary.lines(elapsed);
        lines[0] = format!(
            "{} {} → {} ({})",
            if interrupted {
                "stopped after"
            } else {
                "done:"
            },
            lines[0],
            self.destination.display(),
            self.format.name()
        );
        if skip > 0 {
            lines.push(format!(
                "  resumed: {} buildings were already in the output",
                page::thousands(skip)
            ));
        }
        if let (Some(path), Some(picker)) = (&args.review, picker) {
            let mut notes = Vec::new();
            if skip > 0 {
                notes.push(format!(
                    "This run resumed an earlier one: the page shows buildings {} to {} of the \
                     input, the ones this run predicted.",
                    page::thousands(skip + 1),
                    page::thousands(written)
                ));
            }
            if interrupted {
                notes.push(format!(
                    "The run was stopped after {} of {} buildings.",
                    page::thousands(written),
                    page::thousands(total)
                ));
            }
            let selection = picker.finish();
            let context = page::Context {
                input: args.input.display().to_string(),
                model_uri: app.model_info.uri.clone(),
                register_uri: app.registry().map(|r| r.info.uri.clone()),
                chip_size: app.chip_dimensions(),
                notes,
            };
            write_page(path, &selection, &context)?;
            lines.push(format!(
                "  review page: {} ({} cards of {} buildings)",
                path.display(),
                page::thousands(selection.cards.len()),
                page::thousands(selection.totals.buildings)
            ));
        }
        if let Some(mb) = peak_memory_mb() {
            lines.push(format!("  peak memory: {mb:.0} MB"));
        }
        if let Some(error) = failure {
            for line in &lines {
                eprintln!("{line}");
            }
            return Err(error);
        }
        if interrupted {
            lines.push(format!(
                "interrupted: {} holds the first {} of {} buildings ({} is valid as it is). \
                 Resume with:\n  {}",
                self.destination.display(),
                page::thousands(written),
                page::thousands(total),
                self.format.name(),
                args.resume_command()
            ));
        }
        for line in &lines {
            eprintln!("{line}");
        }
        Ok(if interrupted {
            ExitCode::from(INTERRUPTED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Skips the buildings the output already holds, checking that they are the input's first
/// ones, id for id.
async fn verify_prefix(
    feed: &mut read::Feed,
    existing: &Existing,
    args: &Args,
    chunk_size: usize,
) -> Result<(), FileError> {
    let mut checked = 0;
    while checked < existing.ids.len() {
        let want = (existing.ids.len() - checked).min(chunk_size);
        let chunk = feed.next_chunk(want).await?;
        if chunk.is_empty() {
            break;
        }
        for item in chunk {
            let id = id_key(&item.building.id);
            if id != existing.ids[checked] {
                return Err(FileError::invalid(
                    args.output.as_deref().unwrap_or(Path::new("output")),
                    format!(
                        "building {} is {:?} in the output but {id:?} in the input: the output \
                         was written from another input; write to a new file instead of resuming",
                        checked + 1,
                        existing.ids[checked]
                    ),
                ));
            }
            checked += 1;
        }
    }
    Ok(())
}

fn write_page(
    path: &Path,
    selection: &crate::review::Selection,
    context: &page::Context,
) -> Result<(), FileError> {
    let io = |e| FileError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    page::write(&mut out, selection, context).map_err(io)?;
    out.flush().map_err(io)
}

/// A file can be created at `path`: its directory exists.
fn check_directory(path: &Path) -> Result<(), FileError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(FileError::invalid(
            path,
            format!("no such directory: {}", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// Ctrl-C or SIGTERM: the first asks the run to stop after the chunk in flight (the flag
/// returned), a second ends the process at once.
fn watch_interrupts(printer: Printer) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let sigterm = async {
                match terminate.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm => {}
            }
            if flag.swap(true, Ordering::SeqCst) {
                printer.say("stopping now; the output may end in the middle of a building (--resume mends that)");
                std::process::exit(i32::from(INTERRUPTED));
            }
            printer.say("stopping after the buildings in flight (Ctrl-C again to stop at once)");
        }
    });
    stop
}
