use clap::Parser;
use tracepatch::cli::{CertsCommand, Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs(CertsCommand::Generate(args)) => tracepatch::certs::run_generate(&args),
        Command::Serve(_) | Command::Mutate(_) | Command::Config(_) => {
            anyhow::bail!("not yet wired")
        }
    }
}
