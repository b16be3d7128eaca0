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
        /// Price table (prices and minimum cacheable lengths) instead of the built-in
        /// config/prices.toml; give the proxy's `pricing.file` to bill alike.
        #[arg(long, value_name = "PATH")]
        prices: Option<PathBuf>,
        /// Faults to inject from the start, as JSON or @file.json (see `POST /__sim/faults`),
        /// e.g. '{"mount":"/anthropic","errors":{"status":529,"count":3}}'.
        #[arg(long, value_name = "JSON|@FILE", value_parser = cachet::sim::Faults::from_arg)]
        faults: Option<cachet::sim::Faults>,
    },
    /// Replay workloads through the simulator on a virtual clock (direct, fixed placement and
    /// cachet) and report cost, savings and efficiency against the oracle.
    Replay {
        /// A built-in workload (docqa, chat, agent, rag, volatile, mooncake) or a JSONL file.
        #[arg(long)]
        workload: Option<String>,
        /// Every built-in workload.
        #[arg(long)]
        all: bool,
        /// `ci` replays the first 500 Mooncake requests, `full` all of them.
        #[arg(long, value_enum, default_value = "ci")]
        scale: ScaleArg,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Faults the simulator injects on every route, as JSON or @file.json (the keys of
        /// `cachet sim --faults`); the report then classes each failure, and the exit status is
        /// non-zero when one on the cachet route is not the fault injected on it.
        #[arg(long, value_name = "JSON|@FILE", value_parser = cachet::sim::Faults::from_arg)]
        faults: Option<cachet::sim::Faults>,
        /// Instead of measuring, send the workloads' requests in order to a running cachet
        /// (`http://HOST:PORT`, whose upstreams point at `cachet sim`), in real time order but
        /// without waiting out the gaps: traffic for its ledger and dashboard.
        #[arg(long, value_name = "URL", conflicts_with_all = ["json", "faults"])]
        send_to: Option<String>,
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

/// The simulator's price table from `path`, every problem reported.
fn load_prices(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<cachet::pricing::PriceTable>>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--prices {}: {e}", path.display()))?;
    let table = cachet::pricing::PriceTable::parse(&text)
        .map_err(|errors| anyhow::anyhow!("--prices {}: {}", path.display(), errors.join("; ")))?;
    Ok(Some(std::sync::Arc::new(table)))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScaleArg {
    Ci,
    Full,
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
            prices,
            faults,
        } => match load_prices(prices.as_deref()) {
            Ok(prices) => {
                let settings = cachet::sim::Settings {
                    gemini_implicit,
                    kv_capacity_tokens,
                    prices,
                };
                cachet::server::run_sim(listen, replicas, settings, faults.unwrap_or_default())
                    .await
            }
            Err(err) => Err(err),
        },
        Command::Demo { once, listen } => cachet::demo::run(listen, once).await,
        Command::Replay {
            workload,
            all,
            scale,
            json,
            faults,
            send_to,
        } => {
            let scale = match scale {
                ScaleArg::Ci => cachet::replay::workload::Scale::Ci,
                ScaleArg::Full => cachet::replay::workload::Scale::Full,
            };
            let options = cachet::replay::Options {
                workload,
                all,
                scale,
                json,
                faults,
                send_to,
            };
            cachet::replay::run_cli(options).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cachet: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_faults(args: &[&str]) -> Result<Option<cachet::sim::Faults>, clap::Error> {
        let argv = ["cachet", "sim"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Sim { faults, .. } => Ok(faults),
            _ => panic!("parsed as another command"),
        }
    }

    #[test]
    fn sim_faults_from_json_or_a_file() {
        assert_eq!(sim_faults(&[]).unwrap(), None);
        let json = r#"{"mount":"/anthropic","errors":{"status":529,"count":3}}"#;
        let faults = sim_faults(&["--faults", json]).unwrap().unwrap();
        assert_eq!(faults.mount.as_deref(), Some("/anthropic"));
        let path = std::env::temp_dir().join(format!("cachet-faults-{}.json", std::process::id()));
        std::fs::write(&path, json).unwrap();
        let from_file = sim_faults(&["--faults", &format!("@{}", path.display())]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file.unwrap(), Some(faults));
    }

    #[test]
    fn sim_rejects_unknown_fault_fields() {
        let err = sim_faults(&["--faults", r#"{"latency":5}"#]).unwrap_err();
        assert!(err.to_string().contains("unknown field `latency`"), "{err}");
    }
}
