//! The `bootstrap` executable: reads the configuration, builds the sandbox's state once
//! (ONNX Runtime, the model, the HTTP client), then serves Lambda invocations or runs a local
//! command (`cli`).

use std::process::ExitCode;
use std::sync::Arc;

use tilepredict::app::App;
use tilepredict::cli::{self, Command};
use tilepredict::config::Config;
use tilepredict::error::StartupError;
use tilepredict::lambda;

/// The allocator is set up before tokio starts its threads (see `allocator`), so the runtime
/// is built by hand rather than by `#[tokio::main]`.
fn main() -> ExitCode {
    tilepredict::allocator::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match Command::parse(&args) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("{problem}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    tilepredict::logging::init_with_default(command.default_log_level());
    if let Command::Tool(tool) = &command
        && !tool.needs_app()
    {
        return tool.run_alone().await;
    }
    // A local batch run checks its files before the model loads, then loads it itself.
    if let Command::Predict(args) = command {
        return cli::predict::main(args, init()).await;
    }
    let app = match init().await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error_type = error.error_type(), "init failed: {error}");
            match command {
                Command::Serve => lambda::report_init_error(&error).await,
                _ => eprintln!("init failed ({}): {error}", error.error_type()),
            }
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Serve => lambda::serve(Arc::new(app)).await,
        Command::Invoke(path) => cli::invoke(&app, &path).await,
        Command::Predict(_) => unreachable!("predict runs above"),
        Command::Tool(tool) => tool.run_with(&app).await,
    }
}

async fn init() -> Result<App, StartupError> {
    App::init(Config::from_env()?).await
}
