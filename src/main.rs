use clap::Parser;
use tracepatch::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(_) | Command::Mutate(_) | Command::Certs(_) | Command::Config(_) => {
            anyhow::bail!("not yet wired")
        }
    }
}
