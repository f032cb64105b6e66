//! The deployment beside the host (`deploy/`, `docs/deployment.md`): every YAML document
//! under `deploy/kubernetes/` read strictly (Kubernetes' kinds through `k8s-openapi`,
//! every field those types would skip reported by `serde_ignored`; the ServiceMonitor and
//! the Kustomization through types of our own that deny unknown fields; any other kind
//! refused), the manifests checked against each other, against the config they mount
//! (loaded by the host's own `Config`) and against `deploy/Dockerfile`, and that config
//! served for real: `/livez` and `/readyz` answer 200, and after SIGTERM the host stops
//! within the pod's grace period.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use healthhost::config::Config;
use healthhost::dburl::Kind;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::common::{Host, Reply, Server, StandIn, parse_exposition, postgres, routes};

/// Where the manifests are, from the repository's root.
const MANIFESTS: &str = "deploy/kubernetes";
/// The Dockerfile, from the repository's root.
const DOCKERFILE: &str = "deploy/Dockerfile";
/// The config the image carries by default.
const IMAGE_CONFIG: &str = "deploy/config.toml";
/// The ConfigMap's key holding the config file.
const CONFIG_KEY: &str = "config.toml";
/// What the host holds at most while it loads a plugin, beside its compiler process
/// (BENCHMARKS.md, "Compilers and the plugin author's loop": 110 to 150 MB).
const HOST_PEAK_WHILE_LOADING: u64 = 150 << 20;

/// The Prometheus Operator's ServiceMonitor, as far as the manifest uses it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    endpoints: Vec<ScrapeEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScrapeEndpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: Option<String>,
}

/// kustomize's `kustomization.yaml`, as far as it is used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

/// One YAML document, by its kind (boxed: Kubernetes' objects are large).
#[derive(Debug)]
enum Manifest {
    ConfigMap(Box<ConfigMap>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    ServiceMonitor(Box<ServiceMonitor>),
    Kustomization(Box<Kustomization>),
}

/// `value` as a `T`, failing on a field `T` does not know, named by its path (without
/// serde_ignored's `?` for each optional field on the way).
fn strict<T: DeserializeOwned>(value: serde_norway::Value) -> Result<T, String> {
    let mut ignored = Vec::new();
    let parsed = serde_ignored::deserialize(value, |path| {
        let path = path.to_string();
        let steps: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
        ignored.push(steps.join("."));
    })
    .map_err(|e| e.to_string())?;
    if ignored.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("unknown fields: {}", ignored.join(", ")))
    }
}

/// One document, by its `apiVersion` and `kind`; any other kind is refused.
fn manifest(value: serde_norway::Value) -> Result<Manifest, String> {
    let field = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match (api_version.as_deref(), kind.as_deref()) {
        (Some("v1"), Some("ConfigMap")) => strict(value).map(Manifest::ConfigMap),
        (Some("apps/v1"), Some("Deployment")) => strict(value).map(Manifest::Deployment),
        (Some("v1"), Some("Service")) => strict(value).map(Manifest::Service),
        (Some("policy/v1"), Some("PodDisruptionBudget")) => {
            strict(value).map(Manifest::PodDisruptionBudget)
        }
        (Some("monitoring.coreos.com/v1"), Some("ServiceMonitor")) => {
            strict(value).map(Manifest::ServiceMonitor)
        }
        (Some("kustomize.config.k8s.io/v1beta1"), Some("Kustomization")) => {
            strict(value).map(Manifest::Kustomization)
        }
        (v, k) => Err(format!("unknown kind {k:?} of apiVersion {v:?}")),
    }
}

/// Every document of a YAML text, each read strictly; empty documents are skipped.
fn documents(text: &str) -> Result<Vec<Manifest>, String> {
    let mut found = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(document)
            .map_err(|e| format!("document {}: {e}", i + 1))?;
        if !value.is_null() {
            found.push(manifest(value).map_err(|e| format!("document {}: {e}", i + 1))?);
        }
    }
    Ok(found)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The manifests, one of each kind, and the YAML files they came from.
struct Manifests {
    files: BTreeSet<String>,
    config_map: ConfigMap,
    deployment: Deployment,
    service: Service,
    budget: PodDisruptionBudget,
    monitor: ServiceMonitor,
    kustomization: Kustomization,
}

/// Reads every YAML file under `deploy/kubernetes/`, failing with each problem found.
fn manifests() -> Manifests {
    let mut files = BTreeSet::new();
    let mut all = Vec::new();
    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(MANIFESTS))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            problems.push(format!("{name}: not a YAML file"));
            continue;
        }
        match documents(&std::fs::read_to_string(&path).unwrap()) {
            Ok(found) => all.extend(found.into_iter().map(|m| (name.clone(), m))),
            Err(e) => problems.push(format!("{MANIFESTS}/{name}: {e}")),
        }
        files.insert(name);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    one_of_each(files, all)
}

/// The manifests by kind, each kind exactly once.
fn one_of_each(files: BTreeSet<String>, all: Vec<(String, Manifest)>) -> Manifests {
    let count = all.len();
    let (mut config_map, mut deployment, mut service) = (None, None, None);
    let (mut budget, mut monitor, mut kustomization) = (None, None, None);
    for (file, m) in all {
        let twice = match m {
            Manifest::ConfigMap(m) => config_map.replace(*m).is_some(),
            Manifest::Deployment(m) => deployment.replace(*m).is_some(),
            Manifest::Service(m) => service.replace(*m).is_some(),
            Manifest::PodDisruptionBudget(m) => budget.replace(*m).is_some(),
            Manifest::ServiceMonitor(m) => monitor.replace(*m).is_some(),
            Manifest::Kustomization(m) => {
                assert_eq!(file, "kustomization.yaml", "a Kustomization in {file}");
                kustomization.replace(*m).is_some()
            }
        };
        assert!(!twice, "{file}: a second object of a kind");
    }
    assert_eq!(count, 6, "one object of each kind");
    Manifests {
        files,
        config_map: config_map.expect("a ConfigMap"),
        deployment: deployment.expect("a Deployment"),
        service: service.expect("a Service"),
        budget: budget.expect("a PodDisruptionBudget"),
        monitor: monitor.expect("a ServiceMonitor"),
        kustomization: kustomization.expect("a Kustomization"),
    }
}

impl Manifests {
    fn pod(&self) -> &PodSpec {
        let template = &self.deployment.spec.as_ref().unwrap().template;
        template.spec.as_ref().expect("the pod template's spec")
    }

    fn pod_labels(&self) -> &BTreeMap<String, String> {
        let template = &self.deployment.spec.as_ref().unwrap().template;
        template.metadata.as_ref().unwrap().labels.as_ref().unwrap()
    }

    /// The one container.
    fn container(&self) -> &Container {
        let containers = &self.pod().containers;
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    /// The config file the ConfigMap holds.
    fn config_text(&self) -> &str {
        let data = self.config_map.data.as_ref().expect("the ConfigMap's data");
        data.get(CONFIG_KEY).expect("config.toml in the ConfigMap")
    }

    /// The container's environment variables, by name.
    fn env_names(&self) -> BTreeSet<String> {
        let env = self.container().env.as_deref().unwrap_or_default();
        env.iter().map(|e| e.name.clone()).collect()
    }

    /// The path the liveness probe GETs.
    fn liveness_path(&self) -> String {
        probe_path(self.container().liveness_probe.as_ref())
    }

    /// The path the readiness probe GETs.
    fn readiness_path(&self) -> String {
        probe_path(self.container().readiness_probe.as_ref())
    }

    /// The container's port named `http`.
    fn http_port(&self) -> i32 {
        let ports = self.container().ports.as_deref().unwrap_or_default();
        let http = ports.iter().find(|p| p.name.as_deref() == Some("http"));
        http.expect("a container port named http").container_port
    }
}

/// The path `probe` GETs, on the container port named `http`.
fn probe_path(probe: Option<&Probe>) -> String {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .expect("an HTTP probe");
    assert_eq!(
        get.port,
        IntOrString::String("http".into()),
        "by the port's name"
    );
    get.path.clone().expect("a path")
}

/// A config loaded by the host's own loader (as the pod's
/// `/etc/healthhost/config.toml`) with every variable it reads set, and their names.
fn load_config(text: &str) -> (Config, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let config = load_config_with(text, |name| {
        asked.borrow_mut().insert(name.to_owned());
        let url = name.ends_with("_URL");
        Some(
            if url {
                "postgres://app@db:5432/app"
            } else {
                "token"
            }
            .to_owned(),
        )
    });
    (config, asked.into_inner())
}

/// A config loaded by the host's own loader, its variables read through `env`.
fn load_config_with(text: &str, env: impl Fn(&str) -> Option<String>) -> Config {
    Config::parse(text, Path::new("/etc/healthhost"), env)
        .unwrap_or_else(|problems| panic!("the config does not load: {problems:?}"))
}

/// Whether `selector` selects objects labelled `labels` (and says nothing else).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let wanted = selector.match_labels.as_ref();
    selector.match_expressions.is_none()
        && wanted.is_some_and(|w| !w.is_empty() && w.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A Kubernetes memory quantity (`128Mi`, `1Gi`) in bytes.
fn bytes(quantity: &str) -> u64 {
    let units = [("Ki", 10), ("Mi", 20), ("Gi", 30)];
    let (number, shift) = units
        .iter()
        .find_map(|(unit, shift)| Some((quantity.strip_suffix(unit)?, *shift)))
        .unwrap_or_else(|| panic!("{quantity}: not in Ki, Mi or Gi"));
    number.parse::<u64>().unwrap() << shift
}

#[test]
fn every_manifest_is_a_known_kind_without_unknown_fields() {
    let m = manifests();
    let listed: BTreeSet<String> = m.kustomization.resources.iter().cloned().collect();
    let mut others = m.files.clone();
    others.remove("kustomization.yaml");
    assert_eq!(listed, others, "kustomization.yaml lists every other file");
    assert_eq!(m.kustomization.resources.len(), listed.len(), "each once");
}

#[test]
fn an_unknown_field_or_kind_is_refused_with_its_path() {
    let deployment = read(&format!("{MANIFESTS}/deployment.yaml"));
    let typo = deployment.replacen("path: /livez", "path: /livez\n              paht: /x", 1);
    let error = documents(&typo).unwrap_err();
    assert!(
        error.contains("spec.template.spec.containers.0.livenessProbe.httpGet.paht"),
        "{error}"
    );
    let monitor = read(&format!("{MANIFESTS}/servicemonitor.yaml"));
    let typo = monitor.replacen("path: /metrics", "path: /metrics\n      bearerToken: x", 1);
    let error = documents(&typo).unwrap_err();
    assert!(error.contains("unknown field `bearerToken`"), "{error}");
    let error = documents("apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
    assert!(error.contains("unknown kind"), "{error}");
    let error = documents("kind: Service\n").unwrap_err();
    assert!(error.contains("unknown kind"), "{error}");
}

#[test]
fn the_probes_ports_and_scrape_agree() {
    let m = manifests();
    let (config, _) = load_config(m.config_text());
    let container = m.container();
    assert_eq!(m.liveness_path(), "/livez");
    assert_eq!(m.readiness_path(), "/readyz");
    if let Some(startup) = &container.startup_probe {
        assert_eq!(probe_path(Some(startup)), "/livez");
    }
    // The config listens on every interface, on the container's port.
    assert!(config.listen.ip().is_unspecified(), "{}", config.listen);
    assert_eq!(i32::from(config.listen.port()), m.http_port());
    let spec = m.service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ports = spec.ports.as_deref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, m.http_port());
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    // The ServiceMonitor names the Service's port.
    let endpoints = &m.monitor.spec.endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(Some(&endpoints[0].port), ports[0].name.as_ref());
    assert_eq!(endpoints[0].path, "/metrics");
    assert!(!endpoints[0].interval.is_empty());
    assert!(endpoints[0].scrape_timeout.is_some());
}

#[test]
fn the_pod_runs_locked_down_with_two_replicas_and_bounded_memory() {
    let m = manifests();
    assert_eq!(m.deployment.spec.as_ref().unwrap().replicas, Some(2));
    let pod = m
        .pod()
        .security_context
        .as_ref()
        .expect("a pod securityContext");
    assert_eq!(pod.run_as_non_root, Some(true));
    let (user, group) = image_user();
    assert_eq!(pod.run_as_user, Some(user), "the Dockerfile's USER");
    assert_eq!(pod.run_as_group, Some(group), "the Dockerfile's USER");
    let seccomp = pod.seccomp_profile.as_ref().expect("a seccomp profile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let container = m.container().security_context.as_ref().unwrap();
    assert_eq!(container.read_only_root_filesystem, Some(true));
    assert_eq!(container.allow_privilege_escalation, Some(false));
    let capabilities = container.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(capabilities.add, None);
    assert_eq!(m.pod().automount_service_account_token, Some(false));
    // Requests as BENCHMARKS.md's figures give them; the limit holds the host at its
    // peak beside every compiler process the config lets run at once.
    let resources = m.container().resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    let limits = resources.limits.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(requests["memory"].0, "128Mi");
    assert_eq!(
        limits.keys().collect::<Vec<_>>(),
        ["memory"],
        "no CPU limit"
    );
    let (config, _) = load_config(m.config_text());
    let compiling = config.compile_concurrency as u64 * config.compile_memory;
    assert!(
        bytes(&limits["memory"].0) >= compiling + HOST_PEAK_WHILE_LOADING,
        "the memory limit {} is under {compiling} bytes of compilers and the host's peak",
        limits["memory"].0
    );
}

#[test]
fn every_selector_matches_the_pods_it_means() {
    let m = manifests();
    let labels = m.pod_labels();
    let spec = m.deployment.spec.as_ref().unwrap();
    assert!(selects(&spec.selector, labels), "the Deployment's selector");
    let budget = m.budget.spec.as_ref().unwrap();
    assert!(
        selects(budget.selector.as_ref().unwrap(), labels),
        "the PDB's"
    );
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    let service = m.service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert!(
        service.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service's"
    );
    let service_labels = m.service.metadata.labels.as_ref().unwrap();
    assert!(
        selects(&m.monitor.spec.selector, service_labels),
        "the ServiceMonitor's"
    );
    assert_eq!(m.monitor.metadata.name.as_deref(), Some("healthhost"));
    // Preferably one replica per node.
    let affinity = m
        .pod()
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref());
    let preferred = affinity
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .expect("a preferred pod anti-affinity");
    let term = &preferred[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert!(
        selects(term.label_selector.as_ref().unwrap(), labels),
        "the anti-affinity's"
    );
}

#[test]
fn the_grace_period_outlasts_the_shutdown_delay_and_the_last_history_write() {
    let m = manifests();
    let (config, _) = load_config(m.config_text());
    let grace = m
        .pod()
        .termination_grace_period_seconds
        .expect("a grace period");
    let stop = config.shutdown_delay + healthhost::limits::HISTORY_STOP_FLUSH;
    assert!(
        Duration::from_secs(grace as u64) > stop,
        "terminationGracePeriodSeconds {grace} is not above shutdown_delay {:?} and the \
         history's final write",
        config.shutdown_delay
    );
}

#[test]
fn every_variable_the_config_reads_comes_from_the_one_secret() {
    let m = manifests();
    let (_, asked) = load_config(m.config_text());
    let set = m.env_names();
    let missing: Vec<&String> = asked.difference(&set).collect();
    assert!(
        missing.is_empty(),
        "the config reads {missing:?}, unset in the Deployment"
    );
    let mut secrets = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for var in m.container().env.as_deref().unwrap() {
        let from = var
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref());
        let from = from.unwrap_or_else(|| panic!("{} is not from a Secret", var.name));
        assert_ne!(from.optional, Some(true), "{}: required", var.name);
        secrets.insert(from.name.clone());
        keys.insert(from.key.clone());
    }
    assert_eq!(secrets, BTreeSet::from(["healthhost".to_owned()]));
    // docs/deployment.md creates the Secret with exactly these keys.
    let docs = read("docs/deployment.md");
    let documented: BTreeSet<String> = docs
        .split("--from-literal=")
        .skip(1)
        .map(|rest| rest.split('=').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        documented, keys,
        "the keys docs/deployment.md puts in the Secret"
    );
}

#[test]
fn the_config_is_mounted_where_the_args_point_and_writes_land_in_volumes() {
    let m = manifests();
    let container = m.container();
    let args = container.args.clone().unwrap();
    assert_eq!(args, dockerfile_json("CMD"), "the args are the image's CMD");
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let config_path = &args[at + 1];
    let mounts = container.volume_mounts.as_deref().unwrap();
    let mount = mounts
        .iter()
        .find(|v| &v.mount_path == config_path)
        .unwrap();
    assert_eq!(mount.sub_path.as_deref(), Some(CONFIG_KEY));
    let volumes = m.pod().volumes.as_deref().unwrap();
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let source = volume
        .config_map
        .as_ref()
        .expect("the config from the ConfigMap");
    assert_eq!(Some(&source.name), m.config_map.metadata.name.as_ref());
    // What the host writes is on a writable emptyDir: the root filesystem is read-only.
    let writable = |path: &Path| {
        mounts.iter().any(|v| {
            let empty_dir = volumes
                .iter()
                .any(|vol| vol.name == v.name && vol.empty_dir.is_some());
            empty_dir && v.read_only != Some(true) && path.starts_with(&v.mount_path)
        })
    };
    let (config, _) = load_config(m.config_text());
    let cache = config.cache_dir.as_deref().expect("a compile cache");
    assert!(
        writable(cache),
        "cache_dir {} is not on a writable volume",
        cache.display()
    );
    for ds in &config.datasources {
        assert_eq!(
            ds.kind(),
            Kind::Postgres,
            "{}: replicas share PostgreSQL",
            ds.name()
        );
    }
    // The drop-in folder is a volume of its own, to replace with the drop-ins' volume.
    assert!(
        mounts
            .iter()
            .any(|v| Path::new(&v.mount_path) == config.plugins_dir)
    );
}

#[test]
fn the_image_tag_is_the_crates_version() {
    let m = manifests();
    let image = m.container().image.clone().unwrap();
    let (name, tag) = image.split_once(':').unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(tag, version, "deployment.yaml's image");
    let set = m
        .kustomization
        .images
        .iter()
        .find(|i| i.name == name)
        .unwrap();
    assert_eq!(
        set.new_tag.as_deref(),
        Some(version),
        "kustomization.yaml's image"
    );
    assert!(set.new_name.is_some());
}

// --- The Dockerfile -----------------------------------------------------------------------

/// The Dockerfile's instructions and their arguments, continued lines joined and
/// comments left out.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read(DOCKERFILE).lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap();
                instructions.push((op.to_owned(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The arguments of each `op` instruction.
fn dockerfile_all(op: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(o, _)| o == op)
        .map(|(_, a)| a)
        .collect()
}

/// The last `op` instruction's arguments in JSON form (`CMD`, `ENTRYPOINT`, `VOLUME`).
fn dockerfile_json(op: &str) -> Vec<String> {
    let args = dockerfile_all(op)
        .pop()
        .unwrap_or_else(|| panic!("no {op}"));
    serde_json::from_str(&args).unwrap_or_else(|e| panic!("{op} {args}: {e}"))
}

/// The runtime stage's numeric `USER uid:gid`.
fn image_user() -> (i64, i64) {
    let user = dockerfile_all("USER").pop().expect("a USER");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let uid: i64 = uid
        .parse()
        .expect("a numeric user, which runAsNonRoot can verify");
    assert_ne!(uid, 0, "USER is not root");
    (uid, gid.parse().expect("a numeric group"))
}

/// The package names of the built-in checks under `plugins/`.
fn builtin_crates() -> BTreeSet<String> {
    let mut crates = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("plugins")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        crates.insert(value["package"]["name"].as_str().unwrap().to_owned());
    }
    crates
}

#[test]
fn the_dockerfile_builds_the_builtins_and_puts_them_where_the_configs_look() {
    assert!(
        dockerfile_all("FROM").len() >= 2,
        "a build stage and a runtime stage"
    );
    let (uid, gid) = image_user();
    assert!(uid > 0 && gid > 0);
    // The wasm32-wasip2 build names exactly the crates under plugins/.
    let runs = dockerfile_all("RUN").join(" && ");
    let build = runs
        .split("&&")
        .find(|step| step.contains("--target wasm32-wasip2"))
        .expect("a cargo build for wasm32-wasip2");
    let words: Vec<&str> = build.split_whitespace().collect();
    let built: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].to_owned())
        .collect();
    assert_eq!(built, builtin_crates(), "the plugins the image builds");
    assert!(runs.contains("cargo build --locked --release -p healthhost"));
    // Each is copied into the image, under its crate's file name, where both configs
    // look for it.
    let copied: BTreeSet<PathBuf> = dockerfile_all("COPY")
        .iter()
        .filter_map(|args| args.split_whitespace().last())
        .filter(|dest| dest.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect();
    let names: BTreeSet<String> = copied
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().replace('_', "-"))
        .collect();
    assert_eq!(names, builtin_crates(), "the plugin files the image holds");
    let m = manifests();
    for (what, text) in [
        ("the ConfigMap's config", m.config_text().to_owned()),
        (IMAGE_CONFIG, read(IMAGE_CONFIG)),
    ] {
        let (config, _) = load_config(&text);
        let wanted: BTreeSet<PathBuf> = config.checks.iter().map(|c| c.plugin.clone()).collect();
        assert_eq!(wanted, copied, "{what}'s plugins");
        assert_eq!(
            i32::from(config.listen.port()),
            m.http_port(),
            "{what}'s port"
        );
    }
    let exposed = dockerfile_all("EXPOSE").pop().unwrap();
    assert_eq!(exposed, m.http_port().to_string());
    assert_eq!(dockerfile_json("ENTRYPOINT"), ["/usr/local/bin/healthhost"]);
}

#[test]
fn the_images_own_config_writes_only_to_its_volume() {
    // As `docker run` without variables: the embedded database.
    let config = load_config_with(&read(IMAGE_CONFIG), |_| None);
    let volume = dockerfile_json("VOLUME");
    let on_volume = |path: &Path| volume.iter().any(|v| path.starts_with(v));
    let cache = config.cache_dir.as_deref().unwrap();
    assert!(on_volume(cache), "{}", cache.display());
    for ds in &config.datasources {
        assert_eq!(
            ds.kind(),
            Kind::Sqlite,
            "{}: the embedded database",
            ds.name()
        );
        let file = ds
            .url()
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        assert!(on_volume(Path::new(file)), "{}", ds.url());
    }
    let copies = dockerfile_all("COPY");
    assert!(copies.contains(&format!("{IMAGE_CONFIG} /etc/healthhost/config.toml")));
}

// --- The ConfigMap's config, served ------------------------------------------------------

/// The Telegram token the stand-in answers for.
const TOKEN: &str = "123456789:AAH-deploy-test";
const GET_ME: &str =
    r#"{"ok":true,"result":{"id":123456789,"is_bot":true,"username":"adtro_bot"}}"#;

/// `text` with `from` replaced by `to`, which must be there.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the config no longer holds {from:?}");
    text.replace(from, to)
}

/// The ConfigMap's config as a test host serves it: the plugins built from source, the
/// outside APIs at the stand-in `origin`, the drop-in folder in the host's folder, and
/// without `listen` and `cache_dir` (which `Host` sets).
fn served_config(text: &str, origin: &str) -> String {
    let mut text = text.to_owned();
    for (name, path) in [
        ("check_database", test_artifacts::CHECK_DATABASE),
        ("check_scheduler", test_artifacts::CHECK_SCHEDULER),
        ("check_openrouter", test_artifacts::CHECK_OPENROUTER),
        ("check_telegram", test_artifacts::CHECK_TELEGRAM),
    ] {
        text = rewrite(&text, &format!("/opt/healthhost/plugins/{name}.wasm"), path);
    }
    text = rewrite(&text, "https://api.telegram.org", origin);
    text = rewrite(&text, "https://openrouter.ai", origin);
    text = rewrite(&text, "\"/etc/healthhost/plugins.d\"", "\"plugins.d\"");
    assert!(!text.contains("https://"), "nothing leaves this machine");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("listen = ") && !l.starts_with("cache_dir = "))
        .collect();
    kept.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configmaps_config_answers_the_probes_and_stops_within_the_grace_period() {
    let m = manifests();
    let (config, _) = load_config(m.config_text());
    let grace = Duration::from_secs(m.pod().termination_grace_period_seconds.unwrap() as u64);
    let server = Server::Postgres(postgres().await);
    let (database, url) = server.fresh_database().await;
    let reader = url.replacen("postgres://postgres@", "postgres://healthhost_reader@", 1);
    let get_me = format!("/bot{TOKEN}/getMe");
    let telegram = StandIn::start(routes([(get_me.as_str(), Reply::ok(GET_ME))])).await;
    // A value for every variable of the Deployment's env, as the Secret gives them.
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("HEALTHHOST_READER_URL", reader.as_str()),
        ("HEALTHHOST_DETAILS_TOKEN", "details"),
        ("HEALTHHOST_USAGE_TOKEN", "usage"),
        ("HEALTHHOST_USAGE_READ_TOKEN", "usage-read"),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
    ];
    let given: BTreeSet<String> = env.iter().map(|(k, _)| (*k).to_owned()).collect();
    assert_eq!(given, m.env_names());

    let host = Host::start_with_env(&served_config(m.config_text(), &telegram.origin), &env).await;
    let (live, ready) = (m.liveness_path(), m.readiness_path());
    let (status, _, body) = host.get(&live).await;
    assert_eq!(status, 200, "{body}");
    host.wait_for(&ready, |status, _| status == 200).await;
    let (status, health) = host.json("/health").await;
    assert_eq!(status, 200, "{health}");
    for check in ["database", "telegram"] {
        assert_eq!(health["checks"][check]["status"], "pass", "{health}");
    }
    // What the ServiceMonitor scrapes.
    let (status, _, text) = host.get(&m.monitor.spec.endpoints[0].path).await;
    assert_eq!(status, 200);
    let series = parse_exposition(&text).unwrap();
    let runs = format!("{}_check_runs_total", config.namespace);
    assert!(series.iter().any(|s| s.name == runs), "{text}");

    // SIGTERM as the kubelet sends it: not ready at once, still alive, then gone
    // after shutdown_delay and well before the grace period's SIGKILL.
    let stopping = Instant::now();
    host.signal("TERM");
    host.wait_for(&ready, |status, _| status == 503).await;
    let (status, _, _) = host.get(&live).await;
    assert_eq!(status, 200, "serving through the delay");
    let exit = tokio::task::spawn_blocking(move || {
        let mut host = host;
        let exit = host.child.wait().unwrap();
        (exit, host.stop())
    });
    let (exit, _dir) = tokio::time::timeout(grace, exit)
        .await
        .expect("stopped within terminationGracePeriodSeconds")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(
        stopping.elapsed() >= config.shutdown_delay,
        "{:?}",
        stopping.elapsed()
    );
    server
        .exec(format!("DROP DATABASE {database} WITH (FORCE)"))
        .await;
}

/// The Prometheus rules `healthhost rules` writes for the ConfigMap's config.
const RULES: &str = "deploy/prometheus/healthhost-rules.yml";
/// Their unit tests, in `promtool test rules` format.
const RULE_TESTS: &str = "deploy/prometheus/healthhost-rules.test.yml";
/// An Alertmanager configuration with a Telegram receiver.
const ALERTMANAGER: &str = "deploy/prometheus/alertmanager.example.yml";

#[test]
fn the_prometheus_rules_are_those_of_the_configmaps_checks() {
    let (config, _) = load_config(manifests().config_text());
    let wanted = healthhost::promrules::rules(&config, "config.toml");
    assert!(
        read(RULES) == wanted,
        "{RULES} differs from `healthhost rules --config config.toml` on the ConfigMap's \
         config; regenerate it:\n{wanted}"
    );
}

/// Runs one of Debian's Prometheus tools in `deploy/prometheus/`; a missing tool fails
/// the test with how to install it (`scripts/test` does, as root).
fn prometheus_tool(tool: &str, args: &[&str]) -> std::process::Output {
    let path = Path::new("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{tool} is missing: `apt-get install prometheus prometheus-alertmanager` \
         (Debian's packages; scripts/test installs them when run as root)"
    );
    let out = std::process::Command::new(path)
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?}:\n{text}");
    out
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let name = |p: &'static str| p.rsplit('/').next().unwrap();
    let checked = prometheus_tool("promtool", &["check", "rules", name(RULES)]);
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
    let tested = prometheus_tool("promtool", &["test", "rules", name(RULE_TESTS)]);
    let said = String::from_utf8_lossy(&tested.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let name = ALERTMANAGER.rsplit('/').next().unwrap();
    let checked = prometheus_tool("amtool", &["check-config", name]);
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        said.contains("SUCCESS") && said.contains("1 receivers"),
        "{said}"
    );
}
