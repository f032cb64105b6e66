//! The OCI commands: `push` (a component to a registry, in the Wasm OCI artifact
//! format), `keygen` (a cosign key pair), `sign` and `verify` (cosign signatures),
//! `lock` (pin each tag of the config to its digest) and `mirror` (every plugin of the
//! config, with its signatures, into a folder for air-gapped hosts); and [`prepare`],
//! which pins and opens the store for `serve`, `validate` and `list`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::{ConfigArgs, current_thread};
use crate::config::Config;
use crate::oci::layout::Layout;
use crate::oci::lock::{self, Lock};
use crate::oci::{Oci, OciError, Reference, cosign};

/// The variable holding the private key's password, as cosign reads it.
const PASSWORD_VARIABLE: &str = "COSIGN_PASSWORD";

#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The component (.wasm) to upload.
    file: PathBuf,
    /// Where to: oci://REGISTRY/REPOSITORY:TAG.
    reference: String,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
pub(super) struct KeygenArgs {
    /// Writes PREFIX.key (the private key, sealed with $COSIGN_PASSWORD, empty when
    /// unset) and PREFIX.pub; neither may exist.
    prefix: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct SignArgs {
    /// What to sign: oci://REGISTRY/REPOSITORY:TAG (resolved once; its digest is
    /// signed) or …@sha256:DIGEST.
    reference: String,
    /// The private key (PREFIX.key of `healthhost keygen` or `cosign generate-key-pair`);
    /// its password comes from $COSIGN_PASSWORD.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
pub(super) struct ReferenceArgs {
    /// oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST.
    reference: String,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
pub(super) struct MirrorArgs {
    /// The folder to write (an OCI image layout; created if missing, added to if not).
    path: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The config at `path`; an absent default `config.toml` is an empty config, so an
/// author can push and sign without one.
fn config_for_authors(path: &Path) -> anyhow::Result<Config> {
    if !path.exists() && path == Path::new("config.toml") {
        return Config::parse("", Path::new("."), |name| std::env::var(name).ok())
            .map_err(|_| anyhow::anyhow!("the empty config is valid"));
    }
    Ok(Config::load(path)?)
}

fn open(config: &Config) -> anyhow::Result<Oci> {
    Ok(Oci::open(&config.oci, &oci_cache_dir(config))?)
}

/// The store for uploading: the config's registries without its trust policy, whose
/// keys only pulling reads.
fn open_for_upload(config: &Config) -> anyhow::Result<Oci> {
    let mut upload = config.oci.clone();
    upload.trust.clear();
    Ok(Oci::open(&upload, &oci_cache_dir(config))?)
}

/// Where pulled artifacts are kept: `oci` in the compile cache's folder, or in the
/// default one when the compile cache is off (pulled plugins must live somewhere).
fn oci_cache_dir(config: &Config) -> PathBuf {
    config
        .cache_dir
        .clone()
        .unwrap_or_else(crate::cache::default_dir)
        .join("oci")
}

fn parse(reference: &str) -> anyhow::Result<Reference> {
    Reference::parse(reference).map_err(|e| anyhow::anyhow!(e))
}

pub(super) fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let config = config_for_authors(&args.config.config)?;
    let reference = parse(&args.reference)?;
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let oci = open_for_upload(&config)?;
    let digest = current_thread()?.block_on(oci.push(&reference, &component))?;
    outln!("{digest}")?;
    eprintln!(
        "pushed {} as {}",
        args.file.display(),
        reference.pinned(&digest)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let prefix = args.prefix.display().to_string();
    let (private_path, public_path) = (format!("{prefix}.key"), format!("{prefix}.pub"));
    for path in [&private_path, &public_path] {
        if Path::new(path).exists() {
            bail!("{path} exists; remove it or choose another prefix");
        }
    }
    let password = std::env::var(PASSWORD_VARIABLE).unwrap_or_default();
    let (private, public) = cosign::generate(&password);
    write_private(Path::new(&private_path), &private)?;
    std::fs::write(&public_path, public).with_context(|| format!("cannot write {public_path}"))?;
    outln!(
        "wrote {private_path} (private: keep it secret) and {public_path} (list it under [trust] keys)"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub(super) fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let config = config_for_authors(&args.config.config)?;
    let reference = parse(&args.reference)?;
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let password = std::env::var(PASSWORD_VARIABLE).unwrap_or_default();
    let key = cosign::open_private(&text, &password).with_context(|| {
        format!(
            "{} (password from ${PASSWORD_VARIABLE})",
            args.key.display()
        )
    })?;
    let oci = open_for_upload(&config)?;
    let digest = current_thread()?.block_on(oci.sign(&reference, &key))?;
    outln!("signed {}", reference.pinned(&digest))?;
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `verify` when the plugin is refused.
const EXIT_REFUSED: u8 = 1;

pub(super) fn verify(args: ReferenceArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let reference = parse(&args.reference)?;
    let oci = open(&config)?;
    let verified = current_thread()?.block_on(async {
        let digest = match Lock::read(&lock::path_for(&args.config.config))?.digest(&reference) {
            Some(digest) => digest,
            None => oci.resolve(&reference).await?,
        };
        anyhow::Ok(oci.fetch(&reference.pinned(&digest)).await)
    })?;
    match verified {
        Ok(f) => {
            let by = f
                .signed_by
                .map_or("unsigned, allowed by its [trust] entry".to_owned(), |s| {
                    format!("signed by {s}")
                });
            outln!(
                "verified {} ({by}); component sha256:{}",
                reference.pinned(&f.digest),
                f.sha256
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
    }
}

/// Every OCI reference of the config's checks, then of the plugins folder's grant
/// files.
fn references(config: &Config) -> Vec<Reference> {
    let configured = config.checks.iter().filter_map(|c| c.oci.clone());
    let dropped_in = crate::health::folder::references(config);
    configured.chain(dropped_in).collect()
}

pub(super) fn lock(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let oci = open(&config)?;
    let path = lock::path_for(&args.config);
    let mut lock = Lock::read(&path)?;
    let references = references(&config);
    // A reference written with its digest is pinned already and needs no entry.
    let references: Vec<&Reference> = references.iter().filter(|r| r.digest.is_none()).collect();
    current_thread()?.block_on(async {
        for reference in &references {
            let digest = oci.resolve(reference).await?;
            if lock.digest(reference).as_deref() != Some(digest.as_str()) {
                outln!("{reference} -> {digest}")?;
            }
            lock.set(reference, &digest);
        }
        anyhow::Ok(())
    })?;
    lock.retain(&references);
    lock.write(&path)?;
    outln!("wrote {} ({} plugin(s))", path.display(), references.len())?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn mirror(args: MirrorArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config.config)?;
    let tokio = current_thread()?;
    let oci = tokio.block_on(prepare(
        &mut config,
        &args.config.config,
        Unlocked::Refuse,
        None,
    ))?;
    let mirror = Layout::create(&args.path)
        .with_context(|| format!("cannot create {}", args.path.display()))?;
    let mut failed = 0;
    for reference in references(&config) {
        let Some(oci) = &oci else {
            bail!("{reference}: no [trust] entry of the config covers it");
        };
        let mirrored =
            tokio.block_on(async { oci.mirror(&oci.pin(&reference).await?, &mirror).await });
        match mirrored {
            Ok(_) => outln!("mirrored {reference}")?,
            Err(e) => {
                eprintln!("cannot mirror: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} plugin(s) not mirrored");
    }
    outln!("wrote {}", args.path.display())?;
    Ok(ExitCode::SUCCESS)
}

/// What [`prepare`] does with a config check whose tag the lock lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unlocked {
    /// Refuses to go on, naming every such check (`serve`, `mirror`).
    Refuse,
    /// Resolves the tag now and adds it to the lock, as each dropped-in check's load
    /// does then too (`serve --update-lock`).
    Add,
    /// Leaves the check unpinned, so that its load fails with the reason
    /// (`validate` and `list`, which report each check).
    Report,
}

/// The OCI store when any check of `config` names an OCI plugin, or a `[trust]` entry
/// lets the plugins folder name one, with each config check pinned to its digest: its
/// own, or the lock file's for its tag (`unlocked` says what happens when the lock
/// lacks it). `mirror` replaces the config's `registry_mirror`.
pub(super) async fn prepare(
    config: &mut Config,
    config_path: &Path,
    unlocked_tags: Unlocked,
    mirror: Option<&Path>,
) -> anyhow::Result<Option<Oci>> {
    if let Some(mirror) = mirror {
        config.oci.mirror = Some(mirror.to_owned());
    }
    // The store opens when a check names an OCI plugin, or when a [trust] entry lets
    // the plugins folder name one.
    if config.checks.iter().all(|c| c.oci.is_none()) && config.oci.trust.is_empty() {
        return Ok(None);
    }
    let path = lock::path_for(config_path);
    let oci = open(config)?.with_lock(path, unlocked_tags == Unlocked::Add);
    let mut unlocked = Vec::new();
    for check in &mut config.checks {
        let Some(reference) = check.oci.clone() else {
            continue;
        };
        match oci.pin(&reference).await {
            Ok(pinned) => {
                check.plugin = PathBuf::from(pinned.to_string());
                check.oci = Some(pinned);
            }
            Err(OciError::Unlocked { .. }) if unlocked_tags == Unlocked::Report => {}
            Err(error @ OciError::Unlocked { .. }) => {
                unlocked.push(format!("check '{}': {error}", check.name));
            }
            Err(error) => return Err(error.into()),
        }
    }
    if !unlocked.is_empty() {
        bail!("{}", unlocked.join("\n"));
    }
    Ok(Some(oci))
}
