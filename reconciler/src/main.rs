//! The `tenancy` binary: everything lives in the library; this is the process edge.

fn main() -> std::process::ExitCode {
    // The policy compiler child (see policy::compile), before any command-line parsing.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == tenancy::policy::compile::CHILD_ARG)
    {
        return std::process::ExitCode::from(tenancy::policy::compile::child_main() as u8);
    }
    tenancy::cli::run()
}
