//! Long decoder fuzzing run: `cargo bench --bench fuzz -- [inputs] [seed]` (default 10,000,000
//! inputs). Prints the counts docs/security.md reports; exits non-zero on a round-trip failure
//! or a statement text that the proxy's own readers and sqlparser read differently.
//! A panic aborts the run with its message and the seed to replay.

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let inputs: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let seed: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    const MUTANTS: u32 = 8;
    eprintln!("fuzzing the frontend decoders: {inputs} inputs, seed {seed}");
    let start = std::time::Instant::now();
    let r = shardgate::fuzz::run(seed, inputs / u64::from(MUTANTS + 1), MUTANTS);
    println!(
        "inputs {} accepted {} rejected {} round-trip failures {} panics 0 in {:.1} s",
        r.inputs,
        r.accepted,
        r.rejected,
        r.round_trip_failures,
        start.elapsed().as_secs_f64()
    );
    println!(
        "call texts {} taken for calls {} read otherwise by sqlparser {}",
        r.texts, r.calls, r.calls_misread
    );
    println!(
        "queries sqlparser read {} split elsewhere {} LISTEN not pinned {}",
        r.queries, r.splits_misread, r.listens_unpinned
    );
    println!(
        "clock texts rewritten {} left with a call to rewrite again {}",
        r.clock_texts, r.clock_misread
    );
    if r.round_trip_failures > 0
        || r.clock_misread > 0
        || r.calls_misread > 0
        || r.splits_misread > 0
        || r.listens_unpinned > 0
    {
        std::process::exit(1);
    }
}
