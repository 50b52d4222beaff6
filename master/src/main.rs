//! `lobster`: see [`lobster_master::cli`].

fn main() -> std::process::ExitCode {
    lobster_master::cli::main()
}
