//! The `shardgate` command line. Everything it runs lives in the library.

use clap::{Parser, Subcommand};
use shardgate::config::Config;
use shardgate::slot_commands;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "shardgate", version, about = "A PostgreSQL sharding proxy")]
struct Cli {
    /// Config file to run the proxy from.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log filter (e.g. `info`, `shardgate=debug`); RUST_LOG overrides it.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file and print what it configures.
    CheckConfig { file: PathBuf },
    /// Print the slot and shard that own a key of a sharded table.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        table: String,
        key: String,
    },
    /// Print the cluster's slot table (the version its shards record) as a `[placement.slots]`
    /// block, to pin it in the config.
    Slots {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the moves that would give an added shard its share (--add), or empty a shard
        /// (--drain), instead.
        #[arg(long)]
        plan: bool,
        /// The shard to balance onto (with --plan); it must be listed in the config.
        #[arg(
            long,
            value_name = "SHARD",
            requires = "plan",
            conflicts_with = "drain"
        )]
        add: Option<String>,
        /// The shard to move every slot off (with --plan).
        #[arg(long, value_name = "SHARD", requires = "plan")]
        drain: Option<String>,
        /// Record the config's pinned table as the cluster's next version, after moving rows by
        /// hand with every proxy stopped.
        #[arg(long, conflicts_with = "plan")]
        record: bool,
        /// With --record: how long to wait for running proxies to take the new version up.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        wait: f64,
        /// List the running proxies and the placement version each routes by.
        #[arg(long, conflicts_with_all = ["plan", "record"])]
        proxies: bool,
    },
    /// Move the rows of slots to another shard while clients keep working, then switch the
    /// cluster's placement in one short cut-over (docs/resharding.md).
    MoveSlots {
        #[arg(long, short)]
        config: PathBuf,
        /// The slots to move, as ranges like `0-255,512`.
        #[arg(long, value_name = "RANGES", requires = "to", conflicts_with_all = ["resume", "abort"])]
        slots: Option<String>,
        /// The shard that receives them.
        #[arg(long, value_name = "SHARD", requires = "slots")]
        to: Option<String>,
        /// Finish the unfinished move (after the mover was stopped or failed).
        #[arg(long, conflicts_with = "abort")]
        resume: bool,
        /// Undo the unfinished move, unless its cut-over committed.
        #[arg(long)]
        abort: bool,
        /// The longest the proxies hold new transactions for one cut-over attempt.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        hold: f64,
        /// Cut-over attempts before giving up (the move stays resumable).
        #[arg(long, default_value_t = 5)]
        attempts: u32,
    },
    /// Resolve in-doubt distributed transactions on every shard, then exit. Safe to run while
    /// proxies are running.
    Recover {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the standalone timestamp oracle that proxies with `transactions.oracle = "HOST:PORT"`
    /// share (it listens on `[oracle] listen`).
    Oracle {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start local PostgreSQL shards and a proxy in front of them.
    Demo {
        /// Number of shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Proxy port; shard i listens on port + 1 + i.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Prometheus endpoint port.
        #[arg(long, default_value_t = 9930)]
        metrics_port: u16,
        /// Data directory (reused across runs).
        #[arg(long, default_value = ".shardgate-demo")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Some(Cmd::CheckConfig { file }) => match Config::load(&file) {
            Ok(config) => {
                print!("{}", config.summary());
                println!("config OK");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Some(Cmd::Route { config, table, key }) => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let placement = match runtime(1).block_on(slot_commands::cluster_placement(&config)) {
                Ok((p, source)) => {
                    if let slot_commands::Source::FileUnread(_) = source {
                        eprintln!("shardgate: routing by {}", source.describe());
                    }
                    p
                }
                Err(e) => return fail(e),
            };
            match placement.route_text(&table, &key) {
                Ok((slot, shard)) => {
                    println!("table={table} key={key} slot={slot} shard={shard}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some(Cmd::Slots {
            config,
            plan,
            add,
            drain,
            record,
            wait,
            proxies,
        }) => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let rt = runtime(1);
            if record || proxies {
                let run = async {
                    let version = if record {
                        let v = slot_commands::record(&config).await?;
                        println!("recorded the config's slot table as placement version {v}");
                        v
                    } else {
                        slot_commands::cluster_placement(&config).await?.0.version
                    };
                    let wait = std::time::Duration::from_secs_f64(if record {
                        wait.max(0.0)
                    } else {
                        0.0
                    });
                    let found = slot_commands::wait_for_proxies(&config, version, wait).await?;
                    print!("{}", slot_commands::proxies_text(&found, version));
                    Ok::<(), String>(())
                };
                return match rt.block_on(run) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(e),
                };
            }
            if plan {
                let goal = match (&add, &drain) {
                    (Some(a), _) => slot_commands::Goal::Add(a),
                    (None, Some(d)) => slot_commands::Goal::Drain(d),
                    (None, None) => return fail("--plan needs --add SHARD or --drain SHARD"),
                };
                return match rt.block_on(slot_commands::plan_text(&config, goal)) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                };
            }
            match rt.block_on(slot_commands::cluster_placement(&config)) {
                Ok((p, source)) => {
                    println!("# {}", source.describe());
                    print!("{}", p.slots.to_config(&p.shard_names));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some(Cmd::MoveSlots {
            config,
            slots,
            to,
            resume,
            abort,
            hold,
            attempts,
        }) => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let action = match (slots, to, resume, abort) {
                (Some(slots), Some(target), _, _) => {
                    match shardgate::placement::slots::parse_runs(&slots) {
                        Ok(ranges) if !ranges.is_empty() => {
                            shardgate::moves::Action::Start { ranges, target }
                        }
                        Ok(_) => return fail("--slots names no slot"),
                        Err(e) => return fail(format!("--slots: {e}")),
                    }
                }
                (_, _, true, _) => shardgate::moves::Action::Resume,
                (_, _, _, true) => shardgate::moves::Action::Abort,
                _ => {
                    return fail(
                        "say what to move (--slots RANGES --to SHARD), or --resume or --abort",
                    )
                }
            };
            if !(hold.is_finite() && hold > 0.0) {
                return fail("--hold must be a positive number of seconds");
            }
            let opts = shardgate::moves::Options {
                hold: std::time::Duration::from_secs_f64(hold),
                attempts: attempts.max(1),
            };
            let mut bar = shardgate::moves::progress::Bar::new();
            let result =
                runtime(1).block_on(shardgate::moves::run(&config, action, &opts, &mut |p| {
                    bar.show(p)
                }));
            bar.finish();
            match result {
                Ok(outcome) => {
                    println!("{}", shardgate::moves::describe(&outcome));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some(Cmd::Recover { config }) => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let opts = shardgate::txn::recovery::Options::from_config(
                &config.transactions,
                std::time::Duration::from_secs(config.server.connect_timeout_secs),
            );
            let report = runtime(1).block_on(shardgate::txn::recovery::run(
                &config.shard_targets(),
                &opts,
            ));
            for r in &report.resolved {
                println!("{} on {}: {}", r.gid, r.shard, r.outcome);
            }
            for g in &report.skipped {
                println!("{g}: left for later (too young, or a shard was unreachable)");
            }
            println!(
                "recovery: {} resolved, {} left for later, {} errors",
                report.resolved.len(),
                report.skipped.len(),
                report.errors.len()
            );
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                fail(report.errors.join("; "))
            }
        }
        Some(Cmd::Oracle { config }) => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let run = async {
                tokio::select! {
                    r = shardgate::txn::snapshot::server::serve(&config) => r,
                    _ = shardgate::signals::wait_for_stop() => Ok(()),
                }
            };
            match runtime(1).block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Some(Cmd::Demo {
            shards,
            port,
            metrics_port,
            dir,
        }) => {
            let opts = shardgate::demo::DemoOptions {
                shards,
                port,
                metrics_port,
                dir,
            };
            match runtime(1).block_on(shardgate::demo::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        None => {
            let Some(path) = cli.config else {
                return fail("no config given: use `shardgate --config FILE`, or `shardgate demo` to try it out");
            };
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match runtime(config.server.worker_threads).block_on(serve(config, path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

async fn serve(config: Config, path: PathBuf) -> Result<(), String> {
    // A start held up by a shard (a login that hangs, a lock some session holds) still ends
    // on SIGINT or SIGTERM.
    let proxy = tokio::select! {
        started = shardgate::server::Proxy::start_with_endpoint(&config) => started?,
        _ = shardgate::signals::wait_for_stop() => {
            return Err("stopped by a signal before the start finished".into());
        }
    };
    shardgate::signals::serve(proxy, Some(path)).await;
    Ok(())
}

/// The stack of each of the runtime's worker threads.
const STACK_BYTES: usize = 8 << 20;

/// One worker is a current-thread runtime: every task and the I/O driver on the thread that
/// runs the proxy, as PgBouncer's single event loop. A multi-thread runtime with one worker
/// would hand each wake-up between that worker and the main thread's `block_on`, and pay the
/// work-stealing scheduler's synchronisation for nothing.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        // The main thread's stack, which one worker runs on: a statement whose subqueries
        // are answered first nests the executor's reads, and 2 MiB (the default for a
        // spawned thread) leaves little room for that in a build without optimisation.
        b.worker_threads(workers).thread_stack_size(STACK_BYTES);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("shardgate: {e}");
    ExitCode::from(2)
}
