//! `berth-agent-shim shim <task-dir> <runtime>`: the per-task shim (`berth_agent::shim`) as a
//! binary of this crate, so the agent's integration tests can run tasks without the `berth`
//! binary. The product runs the same code as `berth shim`.

fn main() {
    let args: Vec<String> = std::env::args().skip(2).collect();
    std::process::exit(berth_agent::shim::main(&args));
}
