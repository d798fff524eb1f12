//! The `tracepatch` binary: parse the command line, run the command, and turn any
//! error into one line on standard error and exit status 1.

#![forbid(unsafe_code)]

mod cli;
mod logging;

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cli::{
    CertsCommand, Cli, Command, ConfigCommand, MutateArgs, OutputFormat, ServeArgs,
    WebhookConfigArgs,
};
use tracepatch::config::Config;
use tracepatch::engine::Engine;
use tracepatch::mutate;
use tracepatch::webhook_config;

/// mimalloc: under load the admission path's many small, short-lived allocations make
/// the server about 15% faster than with glibc's allocator (BENCHMARKS.md). Built with
/// `no_thp`: transparent huge pages would back its arenas with 2 MB pages and double
/// the resident memory of an idle server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Mutate(args) => run_mutate(&args),
        Command::Audit(args) => return run_audit(&args),
        Command::Certs(CertsCommand::Generate(args)) => {
            tracepatch::certs::run_generate(&args.options()).map_err(Into::into)
        }
        Command::Config(cmd) => run_config(cmd),
        Command::WebhookConfig(args) => run_webhook_config(args),
        Command::Policies(args) => {
            tracepatch::policies::run(args.config.as_deref(), &args.api_version, &args.namespace)
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let _log = logging::init(args.log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(tracepatch::server::run(args.options()));
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "tracepatch serve failed");
    }
    result
}

/// Loads the configuration file, or the built-in Datadog profile.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn run_mutate(args: &MutateArgs) -> anyhow::Result<()> {
    let engine = Engine::new(load_config(args.config.as_deref())?);
    let input = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let output = match (args.patch, args.output) {
        (true, _) => mutate::Output::Patch,
        (false, OutputFormat::Yaml) => mutate::Output::Yaml,
        (false, OutputFormat::Json) => mutate::Output::Json,
    };
    let result = mutate::run(&engine, &input, output)?;
    let mut stderr = std::io::stderr().lock();
    for w in &result.warnings {
        let _ = writeln!(stderr, "Warning: {w}");
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(result.stdout.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // `tracepatch mutate ... | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write standard output"),
    }
}

fn run_webhook_config(args: WebhookConfigArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    if args.conditions_only {
        print!("{}", webhook_config::render_conditions_file(&config));
        return Ok(());
    }
    let ca_bundle = match &args.ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                pem,
            ))
        }
        None => None,
    };
    let opts = webhook_config::Options {
        name: args.name,
        namespace: args.namespace,
        service: args.service,
        url: args.url,
        ca_bundle,
        match_conditions: !args.no_match_conditions,
    };
    print!("{}", webhook_config::render(&config, &opts));
    Ok(())
}

fn run_config(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
        }
        ConfigCommand::Default => print!("{}", Config::EXAMPLE),
    }
    Ok(())
}

/// `tracepatch audit` has its own exit status, for CI gates: 0 when nothing is found, 1
/// when findings remain, 2 on an error.
fn run_audit(args: &cli::AuditArgs) -> ExitCode {
    use cli::AuditOutput;
    use tracepatch::{AuditFormat, AuditOptions, AuditScope};
    let run = || -> anyhow::Result<u8> {
        let engine = Engine::new(load_config(args.config.as_deref())?);
        let scope = match (&args.namespace, args.all_namespaces) {
            (_, true) => AuditScope::All,
            (Some(ns), false) => AuditScope::Namespace(ns.clone()),
            (None, false) => AuditScope::Context,
        };
        let format = match args.output {
            AuditOutput::Table => AuditFormat::Table,
            AuditOutput::Json => AuditFormat::Json,
            AuditOutput::Yaml => AuditFormat::Yaml,
        };
        let options = AuditOptions {
            scope,
            selector: args.selector.clone(),
            exclude_namespaces: args.exclude_namespace.clone(),
            format,
            fix: args.fix,
            dry_run: args.dry_run,
            chunk_size: args.chunk_size,
        };
        Ok(tracepatch::run_audit(engine, options)?.exit_code())
    };
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
