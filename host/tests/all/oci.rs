//! Plugins by OCI reference, end to end through the command line and `serve`: a real
//! CNCF Distribution server (Debian's `docker-registry`) on 127.0.0.1, with and
//! without passwords; skopeo as the other OCI tool; and stand-in registries for what a
//! hostile one does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use healthhost::oci::artifact;

use crate::common::{BIN, Host, Reply, StandIn, TempDir, drop_file, routes, stderr, stdout};

/// The registry server's command (Debian's package `docker-registry`).
const REGISTRY: &str = "docker-registry";
/// The bcrypt (cost 4: fast) of [`REGISTRY_PASSWORD`] for user `hh`, in the registry's
/// htpasswd file.
const REGISTRY_PASSWORD_HASH: &str = "$2b$04$p8fRuMwyw0rEVwoZFsI/RekyaFSlqRHtLYlvcmt6xQfXnYlvzCwoa";
const REGISTRY_PASSWORD: &str = "registry-pw";
/// The private keys' password in these tests.
const KEY_PASSWORD: &str = "key-pw";

/// A CNCF Distribution server on 127.0.0.1, stopped when dropped.
pub(crate) struct Registry {
    child: Option<Child>,
    pub(crate) addr: String,
    dir: TempDir,
}

impl Registry {
    pub(crate) fn start(with_password: bool) -> Registry {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.0.join("data").display()
        );
        if with_password {
            let htpasswd = dir.0.join("htpasswd");
            std::fs::write(&htpasswd, format!("hh:{REGISTRY_PASSWORD_HASH}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.0.join("config.yml"), config).unwrap();
        let mut registry = Registry {
            child: None,
            addr,
            dir,
        };
        registry.resume();
        registry
    }

    /// Starts the server (again, on its port and storage) and waits until it listens.
    fn resume(&mut self) {
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(self.dir.0.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {REGISTRY} ({e}): install it with `apt-get install docker-registry` (scripts/test does)")
            });
        self.child = Some(child);
        // An ordering wait: the server answers once it listens.
        for _ in 0..200 {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{REGISTRY} did not listen on {}", self.addr);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file the registry keeps the blob `digest` in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .0
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `healthhost ARGS` in `dir` with the keys' password and `env`.
fn hh(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("HEALTHHOST_LOG", "off")
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("DOCKER_CONFIG", dir.join("no-docker-config"))
        .envs(env.iter().copied())
        .output()
        .expect("the healthhost binary runs")
}

/// `hh`, which must succeed; its standard output.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let out = hh(dir, args, &[]);
    assert!(
        out.status.success(),
        "healthhost {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `hh`, which must fail; its standard error.
pub(crate) fn refused(dir: &Path, args: &[&str]) -> String {
    let out = hh(dir, args, &[]);
    assert!(
        !out.status.success(),
        "healthhost {args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// The config `serve` gets from [`Host`] (which adds `listen` and `cache_dir`).
pub(crate) fn body(addr: &str, trust: &str, plugin: &str) -> String {
    format!(
        "[registries.\"{addr}\"]\ninsecure = true\ntimeout = \"20s\"\n{trust}\n[checks.t]\nplugin = \"{plugin}\"\n"
    )
}

/// Writes `config.toml` in `dir` as [`Host`] would.
pub(crate) fn write_config(dir: &Path, body: &str) {
    let text = format!("listen = \"127.0.0.1:0\"\ncache_dir = \"cache\"\n{body}");
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn trust_keys(addr: &str, keys: &str) -> String {
    format!("[trust.\"{addr}/checks\"]\nkeys = [\"{keys}\"]\n")
}

/// `healthhost lock`, then `verify REFERENCE`, in `dir` (on a blocking thread): what
/// `verify` printed.
pub(crate) async fn lock_and_verify(dir: &Path, reference: &str) -> String {
    let (dir, reference) = (dir.to_owned(), reference.to_owned());
    tokio::task::spawn_blocking(move || {
        ok(&dir, &["lock"]);
        ok(&dir, &["verify", &reference])
    })
    .await
    .unwrap()
}

/// The first line of `text`, trimmed (a digest printed by `push`).
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

pub(crate) fn push(dir: &Path, wasm: &str, reference: &str) -> String {
    let digest = first_line(&ok(dir, &["push", wasm, reference]));
    assert!(
        healthhost::oci::reference::valid_digest(&digest),
        "{digest}"
    );
    digest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_plugin_goes_from_push_to_a_running_check_pinned_by_digest() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (addr, d) = (registry.addr.as_str(), dir.0.as_path());
    let reference = format!("oci://{addr}/checks/trivial:1");
    let config = body(addr, &trust_keys(addr, "team.pub"), &reference);
    write_config(d, &config);

    assert!(ok(d, &["keygen", "team"]).contains("wrote team.key"));
    let key = std::fs::read_to_string(d.join("team.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key}"
    );
    assert!(refused(d, &["keygen", "team"]).contains("team.key exists"));
    let digest = push(d, test_artifacts::TRIVIAL, &reference);

    let error = refused(d, &["validate"]);
    assert!(
        error.contains("the tag is not in") && error.contains("healthhost lock"),
        "{error}"
    );
    // `serve` refuses to start on it; `serve --update-lock` pins it and goes on.
    let out = hh(d, &["serve"], &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the tag is not in"),
        "{}",
        stderr(&out)
    );
    let mut serving = Command::new(BIN)
        .args(["serve", "--update-lock"])
        .current_dir(d)
        .env("HEALTHHOST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock_file = d.join("healthhost.lock");
    // An ordering wait: the lock is written before the host listens.
    for _ in 0..600 {
        if lock_file.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = serving.kill();
    let _ = serving.wait();
    let pinned = std::fs::read_to_string(&lock_file).unwrap();
    assert!(pinned.contains(&digest), "{pinned}");
    std::fs::remove_file(&lock_file).unwrap();
    // `list` shows the unlocked check with the reason instead of failing.
    let rows: serde_json::Value = serde_json::from_str(&ok(d, &["list", "--json"])).unwrap();
    assert_eq!(rows[0]["file"], reference.as_str(), "{rows}");
    let why = rows[0]["load_error"].as_str().unwrap_or_default();
    assert!(why.contains("the tag is not in"), "{rows}");
    assert!(ok(d, &["lock"]).contains(&digest));
    let lock = std::fs::read_to_string(d.join("healthhost.lock")).unwrap();
    assert!(lock.contains(&format!("digest = \"{digest}\"")), "{lock}");

    let error = refused(d, &["validate"]);
    assert!(error.contains("unsigned: no signature"), "{error}");
    let signed = ok(d, &["sign", &reference, "--key", "team.key"]);
    assert!(signed.contains(&format!("@{digest}")), "{signed}");
    let verified = ok(d, &["verify", &reference]);
    assert!(verified.contains("signed by team.pub"), "{verified}");
    ok(d, &["validate"]);

    let list = ok(d, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows[0]["file"], format!("{reference}@{digest}"), "{list}");

    let host = Host::start_in(dir, &config).await;
    let (_, health) = host
        .wait_for("/health", |_, b| b["checks"]["t"]["outcome"] == "pass")
        .await;
    assert_eq!(health["checks"]["t"]["digest"], digest.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn other_oci_tools_read_what_the_host_pushes_and_the_other_way_round() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (addr, d) = (registry.addr.as_str(), dir.0.as_path());
    let trust = format!("[trust.\"{addr}/other\"]\nunsafe_allow_unsigned = true\n");
    write_config(
        d,
        &body(addr, &trust, &format!("oci://{addr}/other/trivial:2")),
    );
    let digest = push(
        d,
        test_artifacts::TRIVIAL,
        &format!("oci://{addr}/checks/trivial:1"),
    );

    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo").args(args).current_dir(d).output().unwrap_or_else(|e| {
            panic!("cannot run skopeo ({e}): install it with `apt-get install skopeo` (scripts/test does)")
        });
        assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    };
    let source = format!("docker://{addr}/checks/trivial:1");
    skopeo(&["copy", "--src-tls-verify=false", &source, "oci:layout:one"]);
    let index = std::fs::read_to_string(d.join("layout/index.json")).unwrap();
    assert!(
        index.contains(&digest),
        "skopeo's copy has another manifest: {index}"
    );

    let target = format!("docker://{addr}/other/trivial:2");
    skopeo(&["copy", "--dest-tls-verify=false", "oci:layout:one", &target]);
    let verified = ok(d, &["verify", &format!("oci://{addr}/other/trivial:2")]);
    assert!(
        verified.contains(&digest) && verified.contains("unsigned, allowed"),
        "{verified}"
    );
}

#[test]
fn a_tag_moved_after_locking_changes_nothing_until_locked_again() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (addr, d) = (registry.addr.as_str(), dir.0.as_path());
    let reference = format!("oci://{addr}/checks/x:1");
    write_config(d, &body(addr, &trust_keys(addr, "team.pub"), &reference));
    ok(d, &["keygen", "team"]);
    let first = push(d, test_artifacts::TRIVIAL, &reference);
    ok(d, &["sign", &reference, "--key", "team.key"]);
    ok(d, &["lock"]);
    let second = push(d, test_artifacts::MISBEHAVE, &reference);
    ok(d, &["sign", &reference, "--key", "team.key"]);
    assert_ne!(first, second);

    let rows: serde_json::Value = serde_json::from_str(&ok(d, &["list", "--json"])).unwrap();
    assert_eq!(rows[0]["file"], format!("{reference}@{first}"));
    assert!(ok(d, &["verify", &reference]).contains(&first));
    assert!(ok(d, &["lock"]).contains(&format!("{reference} -> {second}")));
    let rows: serde_json::Value = serde_json::from_str(&ok(d, &["list", "--json"])).unwrap();
    assert_eq!(rows[0]["file"], format!("{reference}@{second}"));
}

#[test]
fn unsigned_wrongly_signed_and_tampered_plugins_never_load() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (addr, d) = (registry.addr.as_str(), dir.0.as_path());
    ok(d, &["keygen", "team"]);
    ok(d, &["keygen", "stranger"]);
    let reference = format!("oci://{addr}/checks/x:1");
    write_config(d, &body(addr, "", &reference));
    let error = refused(
        d,
        &[
            "push",
            test_artifacts::TRIVIAL,
            &reference.replace(addr, "127.0.0.1:1"),
        ],
    );
    assert!(error.contains("127.0.0.1:1"), "{error}");
    let https = format!("[registries.\"{addr}\"]\n");
    std::fs::write(d.join("config.toml"), https).unwrap();
    let error = refused(d, &["push", test_artifacts::TRIVIAL, &reference]);
    assert!(
        error.contains("set insecure = true under [registries"),
        "{error}"
    );
    write_config(d, &body(addr, "", &reference));
    let digest = push(d, test_artifacts::TRIVIAL, &reference);
    let pinned = format!("oci://{addr}/checks/x@{digest}");
    let validate = |trust: &str| {
        let _ = std::fs::remove_dir_all(d.join("cache"));
        write_config(d, &body(addr, trust, &pinned));
        refused(d, &["validate"])
    };

    let error = validate("");
    assert!(
        error.contains("no [trust] entry covers this repository"),
        "{error}"
    );
    let error = validate(&trust_keys(addr, "team.pub"));
    assert!(error.contains("unsigned: no signature"), "{error}");

    ok(d, &["sign", &reference, "--key", "stranger.key"]);
    let error = validate(&trust_keys(addr, "team.pub"));
    assert!(
        error.contains("no trusted key made this signature"),
        "{error}"
    );

    // team's signature of another plugin, copied to this digest's signature tag.
    let other = push(
        d,
        test_artifacts::MISBEHAVE,
        &format!("oci://{addr}/checks/x:2"),
    );
    ok(
        d,
        &[
            "sign",
            &format!("oci://{addr}/checks/x:2"),
            "--key",
            "team.key",
        ],
    );
    copy_manifest(
        addr,
        "checks/x",
        &artifact::signature_tag(&other),
        &artifact::signature_tag(&digest),
    );
    let error = validate(&trust_keys(addr, "team.pub"));
    assert!(
        error.contains(&format!("it signs {other}, another digest")),
        "{error}"
    );

    ok(d, &["sign", &reference, "--key", "team.key"]);
    write_config(d, &body(addr, &trust_keys(addr, "team.pub"), &pinned));
    let _ = std::fs::remove_dir_all(d.join("cache"));
    ok(d, &["validate"]);
    let layer = layer_digest(d, &digest);
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let error = validate(&trust_keys(addr, "team.pub"));
    assert!(
        error.contains(&format!("blob {layer} has digest")),
        "{error}"
    );
}

/// Copies the manifest at tag `from` of `repository` to tag `to`, over the
/// distribution API.
fn copy_manifest(addr: &str, repository: &str, from: &str, to: &str) {
    let client = reqwest::Client::new();
    let url = |tag: &str| format!("http://{addr}/v2/{repository}/manifests/{tag}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bytes = client
            .get(url(from))
            .header("accept", artifact::MANIFEST_MEDIA_TYPE)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let put = client
            .put(url(to))
            .header("content-type", artifact::MANIFEST_MEDIA_TYPE)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.status());
    });
}

/// The layer digest of the cached manifest `digest`.
fn layer_digest(dir: &Path, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let bytes = std::fs::read(dir.join("cache/oci/blobs/sha256").join(hex)).unwrap();
    artifact::Manifest::parse(&bytes)
        .unwrap()
        .wasm_layer()
        .unwrap()
        .digest
        .clone()
}

/// `trivial` pushed to the registry at `addr` as `checks/x:1`, signed by a new key
/// `team` and locked, with the config that trusts that key written in `dir`: the
/// reference, the config and the digest.
fn published(dir: &Path, addr: &str) -> (String, String, String) {
    let reference = format!("oci://{addr}/checks/x:1");
    let config = body(addr, &trust_keys(addr, "team.pub"), &reference);
    write_config(dir, &config);
    ok(dir, &["keygen", "team"]);
    let digest = push(dir, test_artifacts::TRIVIAL, &reference);
    ok(dir, &["sign", &reference, "--key", "team.key"]);
    ok(dir, &["lock"]);
    (reference, config, digest)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_and_then_the_mirror_serve_while_the_registry_is_down() {
    let mut registry = Registry::start(false);
    let dir = TempDir::new();
    let addr = registry.addr.clone();
    let d = dir.0.as_path();
    let (reference, config, _) = published(d, &addr);
    ok(d, &["validate"]);
    assert!(ok(d, &["mirror", "mirror"]).contains(&format!("mirrored {reference}@")));
    registry.stop();

    // The cache verifies and loads without the registry.
    ok(d, &["validate"]);
    std::fs::remove_dir_all(d.join("cache")).unwrap();
    let error = refused(d, &["validate"]);
    assert!(error.contains(&addr), "{error}");

    // The mirror folder, an OCI image layout, stands in for it.
    let mirrored = format!("registry_mirror = \"mirror\"\n{config}");
    write_config(d, &mirrored);
    ok(d, &["validate"]);
    std::fs::remove_dir_all(d.join("cache")).unwrap();
    let host = Host::start_in(dir, &mirrored).await;
    host.wait_for("/health", |_, b| b["checks"]["t"]["outcome"] == "pass")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_started_while_the_registry_is_down_loads_the_plugin_once_it_is_back() {
    let mut registry = Registry::start(false);
    let dir = TempDir::new();
    let addr = registry.addr.clone();
    let d = dir.0.as_path();
    let (_, config, _) = published(d, &addr);
    registry.stop();

    // Neither the cache nor a mirror has the signature: the check waits, loading,
    // and the host answers meanwhile.
    let host = Host::start_in(dir, &config).await;
    let (status, _, _) = host.get("/livez").await;
    assert_eq!(status, 200);
    let (_, health) = host.json("/health").await;
    assert_eq!(health["checks"]["t"]["outcome"], "loading", "{health}");
    // Back only once a whole round of pulls has failed and the host waits for the next.
    let waiting = |lines: Vec<String>| lines.iter().any(|l| l.contains("trying oci://"));
    for _ in 0..1200 {
        if waiting(host.log_lines()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting(host.log_lines()), "{:?}", host.log_lines());
    registry.resume();
    host.wait_for("/health", |_, b| b["checks"]["t"]["outcome"] == "pass")
        .await;
}

#[test]
fn a_registry_with_passwords_takes_them_from_the_config_or_the_docker_config() {
    let registry = Registry::start(true);
    let dir = TempDir::new();
    let (addr, d) = (registry.addr.as_str(), dir.0.as_path());
    let reference = format!("oci://{addr}/checks/x:1");
    let plain = body(addr, &trust_keys(addr, "team.pub"), &reference);
    write_config(d, &plain);
    ok(d, &["keygen", "team"]);
    let error = refused(d, &["push", test_artifacts::TRIVIAL, &reference]);
    assert!(error.contains("wants a user name and password"), "{error}");

    let docker = d.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64_encode(&format!("hh:{REGISTRY_PASSWORD}"));
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let docker_env = [("DOCKER_CONFIG", docker.to_str().unwrap())];
    let out = hh(
        d,
        &["push", test_artifacts::TRIVIAL, &reference],
        &docker_env,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let with_password = plain.replace(
        "insecure = true",
        "insecure = true\nusername = \"hh\"\npassword = \"${REGISTRY_PW}\"",
    );
    write_config(d, &with_password);
    let error = refused(d, &["lock"]);
    assert!(
        error.contains("the variable REGISTRY_PW is unset"),
        "{error}"
    );
    let env = [("REGISTRY_PW", REGISTRY_PASSWORD)];
    for args in [
        &["sign", &reference, "--key", "team.key"][..],
        &["lock"],
        &["validate"],
    ] {
        let out = hh(d, args, &env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A Wasm artifact for the stand-ins: its manifest and digest, its layer's digest,
/// and its config blob's route and reply.
fn artifact_of(wasm: &[u8]) -> (Vec<u8>, String, String, (String, Reply)) {
    let (config, manifest) = artifact::wasm(wasm, "2026-12-07T00:00:00Z").unwrap();
    let bytes = manifest.to_bytes();
    let digest = healthhost::oci::layout::sha256(&bytes);
    let config_route = format!("/v2/x/y/blobs/{}", manifest.config.digest);
    (
        bytes,
        digest,
        manifest.layers[0].digest.clone(),
        (config_route, Reply::ok(config)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_registries_get_a_clear_error_and_nothing_else() {
    let wasm = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    let (manifest, digest, layer, config_blob) = artifact_of(&wasm);
    let m = |tag: &str| format!("/v2/x/y/manifests/{tag}");
    let blob = format!("/v2/x/y/blobs/{layer}");
    let oci_manifest = || {
        Reply::Respond(
            200,
            vec![("content-type", artifact::MANIFEST_MEDIA_TYPE.into())],
            manifest.clone(),
        )
    };
    let image = String::from_utf8(manifest.clone()).unwrap().replace(
        artifact::WASM_CONFIG_MEDIA_TYPE,
        "application/vnd.oci.image.config.v1+json",
    );
    let mut redirects: Vec<(String, Reply)> = (0..6)
        .map(|i| {
            (
                format!("/hop{i}"),
                Reply::redirect(format!("/hop{}", i + 1)),
            )
        })
        .collect();
    redirects.push((m("loop"), Reply::redirect("/hop0")));
    let mut all = routes([
        (&m("huge"), Reply::ok(vec![b' '; 5 << 20])),
        (&m("image"), Reply::ok(image.into_bytes())),
        (&m(&digest), Reply::ok(b"{\"schemaVersion\":2}".to_vec())),
        (&m("slow"), Reply::Slow(10_000, "{}")),
        (&m("ok"), oci_manifest()),
        (&blob, Reply::ok(b"not the component".to_vec())),
    ]);
    all.extend(redirects);
    all.insert(config_blob.0.clone(), config_blob.1.clone());
    let hostile = StandIn::start(all).await;
    let addr = hostile.origin.trim_start_matches("http://").to_owned();

    let dir = TempDir::new();
    let d = dir.0.clone();
    let trust = format!("[trust.\"{addr}\"]\nunsafe_allow_unsigned = true\n");
    let config = body(&addr, &trust, &format!("oci://{addr}/x/y:ok")).replace("\"20s\"", "\"2s\"");
    write_config(&d, &config);
    let verify = |target: String| {
        let d = d.clone();
        async move {
            tokio::task::spawn_blocking(move || refused(&d, &["verify", &target]))
                .await
                .unwrap()
        }
    };
    let cases = [
        (
            ":huge",
            "is larger than the limit of 4194304 bytes".to_owned(),
        ),
        (
            ":image",
            "not a Wasm component artifact: its config is application/vnd.oci.image.config.v1+json"
                .to_owned(),
        ),
        (&format!("@{digest}")[..], "has digest sha256:".to_owned()),
        (":loop", "more than 5 redirects".to_owned()),
        (":slow", "no answer within 2s".to_owned()),
        (":ok", format!("blob {layer} has digest")),
    ];
    for (target, expected) in cases {
        let error = verify(format!("oci://{addr}/x/y{target}")).await;
        assert!(error.contains(&expected), "{target}: {error}");
    }

    // A registry that wants a password and sends blobs to another host: the
    // password never goes there.
    let storage = StandIn::start(routes([(
        &format!("/store/{layer}"),
        Reply::ok(wasm.clone()),
    )]))
    .await;
    let guarded = StandIn::start_basic(routes([
        (&m("ok"), oci_manifest()),
        (
            &blob,
            Reply::redirect(storage.url(&format!("/store/{layer}"))),
        ),
        (&config_blob.0, config_blob.1),
    ]))
    .await;
    let guarded_addr = guarded.origin.trim_start_matches("http://").to_owned();
    let trust = format!("[trust.\"{guarded_addr}\"]\nunsafe_allow_unsigned = true\n");
    let config = body(
        &guarded_addr,
        &trust,
        &format!("oci://{guarded_addr}/x/y:ok"),
    )
    .replace(
        "insecure = true",
        "insecure = true\nusername = \"hh\"\npassword = \"pw\"",
    );
    write_config(&d, &config);
    let target = format!("oci://{guarded_addr}/x/y:ok");
    let d2 = d.clone();
    let verified = tokio::task::spawn_blocking(move || ok(&d2, &["verify", &target]))
        .await
        .unwrap();
    assert!(verified.contains(&digest), "{verified}");
    let sent_to_registry = guarded.requests.lock().unwrap().clone();
    assert!(
        sent_to_registry
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("authorization: basic"))
    );
    let sent_to_storage = storage.requests.lock().unwrap().clone();
    assert_eq!(sent_to_storage.len(), 1, "{sent_to_storage:?}");
    assert!(
        !sent_to_storage[0]
            .to_ascii_lowercase()
            .contains("authorization"),
        "{sent_to_storage:?}"
    );
}

/// [`published`], unlocked, with a config that names no check, so that plugins come
/// from the folder alone: the reference, the config and the digest.
fn published_for_the_folder(dir: &Path, addr: &str) -> (String, String, String) {
    let (reference, _, digest) = published(dir, addr);
    std::fs::remove_file(dir.join("healthhost.lock")).unwrap();
    let config = format!(
        "[registries.\"{addr}\"]\ninsecure = true\n{}",
        trust_keys(addr, "team.pub")
    );
    write_config(dir, &config);
    (reference, config, digest)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_file_alone_names_its_plugin_by_reference_and_loads_once_pinned() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (d, addr) = (dir.0.clone(), registry.addr.clone());
    let (_, config, digest) = published_for_the_folder(&d, &addr);
    let plugins = d.join("plugins.d");
    let repository = format!("oci://{addr}/checks/x");
    drop_file(
        &plugins,
        "tagged.toml",
        format!("plugin = \"{repository}:1\"\n").as_bytes(),
    );
    let by_digest = format!("plugin = \"{repository}@{digest}\"\n");
    drop_file(&plugins, "pinned.toml", by_digest.as_bytes());
    // A plugin named twice, and a grant file that names a file.
    drop_file(&plugins, "twice.toml", by_digest.as_bytes());
    let trivial = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    drop_file(&plugins, "twice.wasm", &trivial);
    drop_file(&plugins, "file.toml", b"plugin = \"x.wasm\"\n");
    // A grant file written before its .wasm is copied in is not a check (yet).
    drop_file(&plugins, "later.toml", b"interval = \"1h\"\n");

    let host = Host::start_in(dir, &config).await;
    let error = |b: &serde_json::Value, name: &str| {
        b["checks"][name]["load_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (_, health) = host
        .wait_for("/health", |_, b| {
            b["checks"]["pinned"]["outcome"] == "pass" && !error(b, "tagged").is_empty()
        })
        .await;
    assert_eq!(health["checks"]["pinned"]["digest"], digest.as_str());
    let tagged = error(&health, "tagged");
    assert!(
        tagged.contains("the tag is not in") && tagged.contains("healthhost lock"),
        "{tagged}"
    );
    assert!(
        error(&health, "twice").contains("the .wasm beside this file is its plugin"),
        "{health}"
    );
    assert!(
        error(&health, "file").contains("a grant file names only an oci:// reference"),
        "{health}"
    );
    assert!(health["checks"].get("later").is_none(), "{health}");

    // `healthhost lock` pins the folder's tags too, and the host, seeing the lock
    // change, loads the check again without its grant file being touched.
    let locked = tokio::task::spawn_blocking({
        let d = d.clone();
        move || ok(&d, &["lock"])
    })
    .await
    .unwrap();
    assert!(
        locked.contains(&format!("{repository}:1 -> {digest}")),
        "{locked}"
    );
    let (_, health) = host
        .wait_for("/health", |_, b| b["checks"]["tagged"]["outcome"] == "pass")
        .await;
    assert_eq!(health["checks"]["tagged"]["digest"], digest.as_str());
    assert!(error(&health, "file").contains("a grant file names only"));

    // A new version nobody signed never loads: the verified one keeps running.
    let (d2, unsigned) = (d.clone(), format!("{repository}:2"));
    let second =
        tokio::task::spawn_blocking(move || push(&d2, test_artifacts::MISBEHAVE, &unsigned))
            .await
            .unwrap();
    let unsigned = format!("plugin = \"{repository}@{second}\"\n");
    drop_file(&plugins, "tagged.toml", unsigned.as_bytes());
    let (_, health) = host
        .wait_for("/health", |_, b| error(b, "tagged").contains("unsigned"))
        .await;
    assert_eq!(health["checks"]["tagged"]["outcome"], "pass", "{health}");
    assert_eq!(health["checks"]["tagged"]["digest"], digest.as_str());
}

/// A private certificate authority and a certificate it issued for 127.0.0.1: the
/// authority's PEM, and the server's certificate and key (PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), server.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_registry_with_a_private_ca_is_reached_and_never_downgraded() {
    let wasm = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    let (manifest, digest, layer, (config_route, config_blob)) = artifact_of(&wasm);
    let oci_manifest = Reply::Respond(
        200,
        vec![("content-type", artifact::MANIFEST_MEDIA_TYPE.into())],
        manifest,
    );
    // x/y sends its blob to plain HTTP; x/z serves it itself.
    let plain = StandIn::start(routes([(&format!("/{layer}"), Reply::ok(wasm.clone()))])).await;
    let mut all = routes([
        ("/v2/x/y/manifests/ok", oci_manifest.clone()),
        ("/v2/x/z/manifests/ok", oci_manifest),
        (
            &format!("/v2/x/y/blobs/{layer}"),
            Reply::redirect(plain.url(&format!("/{layer}"))),
        ),
        (&format!("/v2/x/z/blobs/{layer}"), Reply::ok(wasm)),
        (&config_route.replace("/x/y/", "/x/z/"), config_blob.clone()),
    ]);
    all.insert(config_route, config_blob);
    let (ca, cert, key) = private_ca();
    let registry = StandIn::start_tls(all, &cert, &key).await;
    let addr = registry.origin.trim_start_matches("https://").to_owned();

    let dir = TempDir::new();
    let d = dir.0.clone();
    std::fs::write(d.join("ca.pem"), ca).unwrap();
    let config = |ca: &str| {
        format!(
            "[registries.\"{addr}\"]\ntimeout = \"5s\"\n{ca}\n[trust.\"{addr}\"]\nunsafe_allow_unsigned = true\n"
        )
    };
    let verify = |config: String, target: &str, succeeds: bool| {
        let (d, target) = (d.clone(), format!("oci://{addr}/{target}"));
        async move {
            tokio::task::spawn_blocking(move || {
                write_config(&d, &config);
                if succeeds {
                    ok(&d, &["verify", &target])
                } else {
                    refused(&d, &["verify", &target])
                }
            })
            .await
            .unwrap()
        }
    };
    // Without the authority, the certificate is not trusted.
    let error = verify(config(""), "x/z:ok", false).await;
    assert!(error.contains(&addr), "{error}");
    // With it: a redirect from https to http is refused, and nothing is asked of the
    // plain server (first, before the same layer is in the cache)...
    let error = verify(config("ca = \"ca.pem\""), "x/y:ok", false).await;
    assert!(
        error.contains("refused a redirect from https to http"),
        "{error}"
    );
    assert!(plain.requests.lock().unwrap().is_empty());
    // ...and the plugin verifies over HTTPS.
    let verified = verify(config("ca = \"ca.pem\""), "x/z:ok", true).await;
    assert!(verified.contains(&digest), "{verified}");
    // A `ca` that is not certificates is an error at once, naming the file.
    std::fs::write(d.join("bad.pem"), "not a certificate").unwrap();
    let error = verify(config("ca = \"bad.pem\""), "x/z:ok", false).await;
    assert!(error.contains("bad.pem: not PEM certificates"), "{error}");
}

/// A cosign signature attached to the manifest `digest` (of `size` bytes) as an OCI
/// 1.1 referrer, as `cosign sign --registry-referrers-mode=oci-1-1` writes it: the
/// payload, the signature manifest, and an index listing it (the referrers API's
/// answer, and the fallback tag's content).
fn referrer(digest: &str, size: usize, repository: &str, key: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use healthhost::oci::cosign;
    let sha = healthhost::oci::layout::sha256;
    let payload = cosign::payload(repository, digest);
    let key = cosign::open_private(key, KEY_PASSWORD).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": artifact::MANIFEST_MEDIA_TYPE,
        "artifactType": artifact::SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(b"{}"), "size": 2},
        "layers": [{
            "mediaType": cosign::LAYER_MEDIA_TYPE,
            "digest": sha(&payload),
            "size": payload.len(),
            "annotations": {cosign::SIGNATURE_ANNOTATION: cosign::sign(&key, &payload)},
        }],
        "subject": {"mediaType": artifact::MANIFEST_MEDIA_TYPE, "digest": digest, "size": size},
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": artifact::MANIFEST_MEDIA_TYPE,
            "digest": sha(&manifest),
            "size": manifest.len(),
            "artifactType": artifact::SIGNATURE_ARTIFACT_TYPE,
        }],
    })
    .to_string()
    .into_bytes();
    (payload, manifest, index)
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_attached_as_oci_referrers_verify_through_the_api_or_its_fallback_tag() {
    use healthhost::oci::client::{Client, Settings};
    let sha = healthhost::oci::layout::sha256;
    // A registry without the referrers API (Debian's Distribution 2.8): the index at
    // the fallback tag sha256-HEX.
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (d, addr) = (dir.0.clone(), registry.addr.clone());
    let reference = format!("oci://{addr}/checks/x:1");
    write_config(&d, &body(&addr, &trust_keys(&addr, "team.pub"), &reference));
    ok(&d, &["keygen", "team"]);
    let digest = push(&d, test_artifacts::TRIVIAL, &reference);
    let key = std::fs::read_to_string(d.join("team.key")).unwrap();
    let settings = Settings {
        insecure: true,
        username: None,
        password: None,
        timeout: Duration::from_secs(20),
        ca: None,
    };
    let client = Client::new(&addr, settings).unwrap();
    let size = client
        .manifest("checks/x", &digest)
        .await
        .unwrap()
        .unwrap()
        .bytes
        .len();
    let (payload, manifest, index) = referrer(&digest, size, &format!("{addr}/checks/x"), &key);
    client.put_blob("checks/x", &payload).await.unwrap();
    client.put_blob("checks/x", b"{}").await.unwrap();
    let media = artifact::MANIFEST_MEDIA_TYPE;
    client
        .put_manifest("checks/x", &sha(&manifest), media, &manifest)
        .await
        .unwrap();
    let index_media = "application/vnd.oci.image.index.v1+json";
    let fallback = digest.replacen(':', "-", 1);
    client
        .put_manifest("checks/x", &fallback, index_media, &index)
        .await
        .unwrap();
    let verified = lock_and_verify(&d, &reference).await;
    assert!(verified.contains("signed by team.pub"), "{verified}");

    // A registry with the API: the stand-in answers it (and has no .sig tag).
    let wasm = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    let (wasm_manifest, digest, layer, (config_route, config_blob)) = artifact_of(&wasm);
    let (payload, manifest, index) = referrer(&digest, wasm_manifest.len(), "127.0.0.1/x/y", &key);
    let query = "?artifactType=application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson";
    let mut all = routes([
        ("/v2/x/y/manifests/ok", Reply::ok(wasm_manifest)),
        (&format!("/v2/x/y/blobs/{layer}"), Reply::ok(wasm)),
        (
            &format!("/v2/x/y/referrers/{digest}{query}"),
            Reply::ok(index),
        ),
        (
            &format!("/v2/x/y/manifests/{}", sha(&manifest)),
            Reply::ok(manifest),
        ),
        (
            &format!("/v2/x/y/blobs/{}", sha(&payload)),
            Reply::ok(payload),
        ),
    ]);
    all.insert(config_route, config_blob);
    let stand_in = StandIn::start(all).await;
    let addr = stand_in.origin.trim_start_matches("http://").to_owned();
    let reference = format!("oci://{addr}/x/y:ok");
    let trust = format!("[trust.\"{addr}\"]\nkeys = [\"team.pub\"]\n");
    write_config(&d, &body(&addr, &trust, &reference));
    let verified = tokio::task::spawn_blocking(move || ok(&d, &["verify", &reference]))
        .await
        .unwrap();
    assert!(verified.contains("signed by team.pub"), "{verified}");
    assert!(verified.contains(&digest), "{verified}");
    let asked = stand_in.requests.lock().unwrap().join("\n");
    assert!(asked.contains("/referrers/"), "{asked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_update_lock_pins_a_dropped_in_tag_as_it_loads() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let (d, addr) = (dir.0.clone(), registry.addr.clone());
    let (reference, _, digest) = published_for_the_folder(&d, &addr);
    let grant = format!("plugin = \"{reference}\"\n");
    drop_file(&d.join("plugins.d"), "tagged.toml", grant.as_bytes());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serving = Command::new(BIN)
        .args([
            "serve",
            "--update-lock",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(&d)
        .env("HEALTHHOST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/health");
    let mut last = serde_json::Value::Null;
    // An ordering wait: until the check has run, or the host's own deadline.
    for _ in 0..600 {
        if let Ok(answer) = reqwest::get(&url).await
            && let Ok(text) = answer.text().await
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&text)
        {
            last = body;
            if last["checks"]["tagged"]["outcome"] == "pass" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = serving.kill();
    let _ = serving.wait();
    assert_eq!(last["checks"]["tagged"]["outcome"], "pass", "{last}");
    assert_eq!(last["checks"]["tagged"]["digest"], digest.as_str());
    let lock = std::fs::read_to_string(d.join("healthhost.lock")).unwrap();
    assert!(lock.contains(&digest), "{lock}");
}
