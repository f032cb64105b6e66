//! `healthhost check`: one plugin, run once under production limits, with grants from
//! flags and a grant file, fixtures instead of the network, and the verdict printed
//! with its measurements and diagnostics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::{child_compilation, current_thread, isolate_sql};
use crate::capabilities::fixtures::Fixtures;
use crate::capabilities::sql::{Datasource, Datasources};
use crate::config::Compiler;
use crate::config::grants::{Grants, HttpPolicy, Settings, SqlPolicy};
use crate::diagnose::Diagnostics;
use crate::escape::escape_controls;
use crate::limits::Limits;
use crate::runtime::{Outcome, RunReport, Runtime};
use crate::thresholds::{Threshold, perfdata};
use crate::units;

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The plugin: a WebAssembly component (.wasm) built for the healthhost:plugin/check world.
    plugin: PathBuf,

    /// The check's name in logs and output [default: the file name without extension].
    #[arg(long)]
    name: Option<String>,

    /// Allow HTTP requests to this origin, e.g. https://api.telegram.org or
    /// http://127.0.0.1:8080 (repeatable; `*` allows any origin).
    #[arg(long = "allow-http", value_name = "ORIGIN")]
    allow_http: Vec<String>,

    /// Define a datasource and grant it to the check, e.g.
    /// main=postgres://user@127.0.0.1:5432/app, main=sqlite:data/app.db,
    /// main=mysql://root@127.0.0.1:3306/test (repeatable).
    #[arg(long = "datasource", value_name = "NAME=URL")]
    datasources: Vec<String>,

    /// Let the check use datasource NAME although its role can run programs or read
    /// and write files on the database server (a superuser, say). Without it such a
    /// datasource is refused (repeatable).
    #[arg(long = "unsafe-allow-privileged-role", value_name = "NAME")]
    unsafe_allow_privileged_role: Vec<String>,

    /// Give the check a setting (repeatable; overrides the grant file's).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,

    /// Give the check a secret setting read from an environment variable (repeatable).
    /// Secrets are removed from every output. An unset variable leaves the key unset.
    #[arg(long = "secret-env", value_name = "KEY=ENVVAR")]
    secrets: Vec<String>,

    /// Take grants, settings and limits from a grant file, as `serve` does for a
    /// dropped-in NAME.toml; the flags above add to it and override it.
    #[arg(long, value_name = "FILE")]
    grants: Option<PathBuf>,

    /// Answer the check's HTTP requests and SQL queries from a fixtures file instead
    /// of the network and the databases (repeatable; see docs/writing-plugins.md, "Fixtures").
    /// Grants and limits still apply; a call no fixture answers is refused.
    #[arg(long, value_name = "FILE")]
    fixtures: Vec<PathBuf>,

    /// A quick HTTP fixture: '[METHOD] URL -> STATUS [BODY]', e.g.
    /// 'GET http://127.0.0.1:8080/status -> 200 {"status":"ok"}' (repeatable).
    #[arg(long, value_name = "SPEC")]
    respond: Vec<String>,

    /// A quick SQL fixture: 'DATASOURCE: STATEMENT -> ROWS', ROWS a JSON array of
    /// rows or 'error: TEXT', e.g. 'main: SELECT count(*) FROM jobs -> [[3]]'
    /// (repeatable).
    #[arg(long, value_name = "SPEC")]
    sql: Vec<String>,

    /// Wall-clock limit for the run, e.g. 3s or 500ms [default: the grant file's, or 10s].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    timeout: Option<Duration>,

    /// Fuel limit (about one unit per WebAssembly instruction) [default: the grant
    /// file's, or 5000000000].
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// Linear-memory limit, e.g. 16MiB [default: the grant file's, or 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    memory: Option<u64>,

    /// The code generator: cranelift compiles slowest and runs fastest (what `serve`
    /// uses by default), winch compiles fastest.
    #[arg(long, value_enum, default_value_t = Compiler::Cranelift)]
    compiler: Compiler,

    /// The writable memory the compiler process may use, as `serve`'s
    /// `compile_memory` [default: 2GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::limits::parse_compile_memory)]
    compile_memory: Option<u64>,

    /// How long the compile may take, as `serve`'s `compile_timeout` [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    compile_timeout: Option<Duration>,

    /// Print the report as JSON.
    #[arg(long, conflicts_with = "nagios")]
    json: bool,

    /// Print one Nagios plugin line, `NAME STATE - message | perfdata`, with the grant
    /// file's thresholds in the perfdata (the exit code is Nagios' either way).
    #[arg(long)]
    nagios: bool,

    /// Where compiled plugins are kept, so that checking an unchanged plugin again
    /// does not compile it again (default: serve's, `$XDG_CACHE_HOME/healthhost`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile the plugin without reading or writing the compile cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

pub(super) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.plugin)?,
    };
    let fixtures = fixtures_from_flags(&args)?;
    let setup = check_setup(&args, &name, fixtures.as_ref())?;
    let tokio = current_thread()?;
    let mut runtime = Runtime::with_compiler(setup.datasources, args.compiler)?;
    runtime.compile_in(child_compilation(
        args.compile_memory
            .unwrap_or(crate::limits::DEFAULT_COMPILE_MEMORY),
        args.compile_timeout
            .unwrap_or(crate::limits::DEFAULT_COMPILE_TIMEOUT),
    ));
    if !args.no_cache {
        let dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::cache::default_dir);
        if let Err(e) = runtime.use_cache(&dir, None) {
            // Only slower: the plugin is compiled without the cache.
            tracing::warn!("{e}; compiling without a cache");
        }
    }
    let (grants, settings) = (setup.grants.clone(), setup.settings.clone());
    let mut plugin =
        runtime.load_file(&name, &args.plugin, None, grants, settings, setup.limits)?;
    if let Some(fixtures) = fixtures {
        plugin = plugin.with_fixtures(fixtures);
    }
    let mut report = tokio.block_on(runtime.run(&Arc::new(plugin)));
    report.judge_thresholds(&setup.thresholds);
    let diagnostics = Diagnostics::of(&report, &setup.settings, &setup.grants.metrics);
    if args.nagios {
        outln!("{}", nagios(&report, &setup.thresholds))?;
    } else if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["diagnostics"] = serde_json::to_value(&diagnostics)?;
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        out!("{}{}", human(&report), diagnostics.human())?;
    }
    Ok(ExitCode::from(report.outcome.exit_code()))
}

/// The fixtures of `--fixtures`, `--respond` and `--sql`, in that order; `None` when
/// there are none (the check then reaches the network and the databases).
fn fixtures_from_flags(args: &CheckArgs) -> anyhow::Result<Option<Fixtures>> {
    let mut all = Fixtures::default();
    for path in &args.fixtures {
        all.extend(Fixtures::load(path)?);
    }
    for spec in &args.respond {
        all.extend(Fixtures::respond_flag(spec)?);
    }
    for spec in &args.sql {
        all.extend(Fixtures::sql_flag(spec)?);
    }
    let given = !args.fixtures.is_empty() || !args.respond.is_empty() || !args.sql.is_empty();
    Ok(given.then_some(all))
}

/// What `check` runs a plugin with: the grant file's grants, settings and limits (or
/// none), with the flags' added and overriding.
struct CheckSetup {
    grants: Grants,
    settings: Settings,
    datasources: Datasources,
    limits: Limits,
    /// The grant file's `thresholds`.
    thresholds: Vec<Threshold>,
}

fn check_setup(
    args: &CheckArgs,
    name: &str,
    fixtures: Option<&Fixtures>,
) -> anyhow::Result<CheckSetup> {
    let env = |var: &str| std::env::var(var).ok();
    let file = match &args.grants {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read grant file {}", path.display()))?;
            let check =
                crate::config::grant_file(name, Some(args.plugin.clone()), Some(&text), &env, None)
                    .map_err(|problems| {
                        anyhow::anyhow!(crate::problems::render(
                            &path.display().to_string(),
                            &problems
                        ))
                    })?;
            Some(check)
        }
        None => None,
    };
    let (mut grants, mut settings, limits, thresholds) = match file {
        Some(c) => (c.grants, c.settings, c.limits, c.thresholds),
        None => Default::default(),
    };
    let mut origins = grants.http.entries();
    origins.extend(args.allow_http.iter().cloned());
    grants.http = HttpPolicy::parse(&origins)?;

    let mut datasources = Datasources::default();
    let mut names: Vec<String> = grants.sql.names().map(str::to_owned).collect();
    for pair in &args.datasources {
        let (ds, url) = split_pair("--datasource", pair)?;
        let allow = args.unsafe_allow_privileged_role.iter().any(|n| n == ds);
        datasources.insert(Datasource::parse(ds, url)?.unsafe_allow_privileged_role(allow));
        names.push(ds.to_owned());
    }
    isolate_sql(&mut datasources);
    if fixtures.is_none()
        && let Some(missing) = names.iter().find(|n| datasources.get(n).is_none())
    {
        bail!(
            "the grant file grants datasource '{missing}', which is not defined: pass --datasource {missing}=URL, or answer its queries with --fixtures or --sql"
        );
    }
    grants.sql = SqlPolicy::new(names);

    for pair in &args.settings {
        let (key, value) = split_pair("--set", pair)?;
        settings.set(key, value);
    }
    for pair in &args.secrets {
        let (key, var) = split_pair("--secret-env", pair)?;
        match std::env::var(var) {
            Ok(value) => settings.set_secret(key, value),
            Err(std::env::VarError::NotPresent) => {
                tracing::warn!("environment variable {var} is not set; setting '{key}' stays unset")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {var} is not valid UTF-8")
            }
        }
    }
    let limits = Limits {
        timeout: args.timeout.unwrap_or(limits.timeout),
        fuel: args.fuel.unwrap_or(limits.fuel),
        memory: args.memory.unwrap_or(limits.memory),
    };
    Ok(CheckSetup {
        grants,
        settings,
        datasources,
        limits,
        thresholds,
    })
}

fn default_name(plugin: &Path) -> anyhow::Result<String> {
    plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "cannot derive a check name from '{}': pass --name",
                plugin.display()
            )
        })
}

/// Splits `KEY=VALUE`, naming the flag when the `=` is missing.
fn split_pair<'a>(flag: &str, pair: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => bail!("invalid {flag} '{pair}': expected KEY=VALUE"),
    }
}

/// The Nagios plugin line of `report`: `NAME STATE - message | perfdata`, the state
/// OK, WARNING, CRITICAL or UNKNOWN as the exit code says, each sample with the ranges
/// of `thresholds` that judge it.
fn nagios(report: &RunReport, thresholds: &[Threshold]) -> String {
    let state = match report.outcome {
        Outcome::Pass => "OK",
        Outcome::Warn => "WARNING",
        Outcome::Fail => "CRITICAL",
        Outcome::Error(_) => "UNKNOWN",
    };
    let mut line = format!("{} {state}", escape_controls(&report.check).to_uppercase());
    let message = match (report.outcome, &report.message) {
        (Outcome::Error(kind), Some(m)) => Some(format!("{}: {m}", kind.label())),
        (Outcome::Error(kind), None) => Some(kind.label().to_owned()),
        (_, message) => message.clone(),
    };
    if let Some(message) = message {
        // `|` would start the perfdata.
        line.push_str(&format!(
            " - {}",
            escape_controls(&message).replace('|', "/")
        ));
    }
    let fields: Vec<String> = report
        .samples
        .iter()
        .map(|s| perfdata(s, thresholds))
        .collect();
    if !fields.is_empty() {
        line.push_str(&format!(" | {}", fields.join(" ")));
    }
    line
}

/// The report for people: verdict line, measurements, samples, dropped samples. The
/// plugin's text has its control characters escaped, so it cannot forge lines or
/// drive the terminal.
fn human(report: &RunReport) -> String {
    let outcome = report.outcome.label().to_uppercase();
    let kind = match report.outcome {
        Outcome::Error(_) => "ERROR ",
        _ => "",
    };
    let mut out = format!("{}: {kind}{outcome}", escape_controls(&report.check));
    if let Some(message) = &report.message {
        out.push_str(&format!(" - {}", escape_controls(message)));
    }
    out.push('\n');
    out.push_str(&format!(
        "  latency {:.2} ms, fuel {}, peak memory {:.2} MiB\n",
        report.latency.as_secs_f64() * 1000.0,
        report.fuel_consumed,
        report.peak_memory_bytes as f64 / (1024.0 * 1024.0)
    ));
    for sample in &report.samples {
        let labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_controls(v)))
            .collect();
        out.push_str(&format!(
            "  {}{{{}}} {}\n",
            sample.name,
            labels.join(","),
            sample.value
        ));
    }
    if !report.samples_dropped.is_empty() {
        let reasons: Vec<String> = report
            .samples_dropped
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason.label()))
            .collect();
        out.push_str(&format!("  samples dropped: {}\n", reasons.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(split_pair("--set", "a=b=c").unwrap(), ("a", "b=c"));
        assert_eq!(split_pair("--set", "a=").unwrap(), ("a", ""));
        for bad in ["a", "=b", ""] {
            let err = split_pair("--set", bad).unwrap_err().to_string();
            assert!(
                err.contains("--set") && err.contains(&format!("'{bad}'")),
                "{err}"
            );
        }
    }
}
