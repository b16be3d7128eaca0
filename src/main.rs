//! The `cachet` binary: parse the command line, then hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cachet",
    version,
    about = "A context-caching HTTP proxy for LLM APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// TOML config file (default: config/cachet.toml when it exists).
        #[arg(long, env = "CACHET_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address; overrides `listen` from the file and CACHET_LISTEN.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the upstream simulator (OpenAI, Anthropic, Gemini, DeepSeek, vLLM-like replicas).
    Sim {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        /// Number of vLLM-like replicas mounted at /vllm/{i}.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Simulate Gemini's implicit caching (Google guarantees no saving from it).
        #[arg(long)]
        gemini_implicit: bool,
        /// KV cache size of each replica, in tokens.
        #[arg(long, default_value_t = 2_000_000)]
        kv_capacity_tokens: u64,
    },
    /// Simulator and proxy in one process, a small workload in every dialect, a summary table.
    Demo {
        /// Exit after printing the table instead of serving on.
        #[arg(long)]
        once: bool,
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

// Requests are served on per-core worker threads (`cachet::workers`); this runtime only runs
// the control plane: signals, draining, metrics upkeep.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => cachet::server::run_serve(config, listen).await,
        Command::Sim {
            listen,
            replicas,
            gemini_implicit,
            kv_capacity_tokens,
        } => {
            let settings = cachet::sim::Settings {
                gemini_implicit,
                kv_capacity_tokens,
            };
            cachet::server::run_sim(listen, replicas, settings).await
        }
        Command::Demo { once, listen } => cachet::demo::run(listen, once).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cachet: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
