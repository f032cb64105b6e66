//! The OCI distribution protocol, as much as plugins need: manifests and blobs by tag
//! or digest, uploads, and the registry's Basic or token (Bearer) authentication.
//! Built on the host's own HTTP client, with the bounds a hostile registry needs:
//! manifest and blob size caps enforced while reading, every digest recomputed, one
//! deadline per operation (a registry that trickles its answer times out), at most
//! [`MAX_REDIRECTS`] redirects and never from https to http, and credentials dropped
//! on a redirect to another host (reqwest removes `Authorization` when the host,
//! port or scheme changes).

use std::time::Duration;

use base64::Engine;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::layout::sha256;

/// Redirects followed per request (registries send blobs to object storage by one).
pub const MAX_REDIRECTS: usize = 5;
/// The largest manifest read: the CNCF Distribution server's own limit.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest error body kept for a message.
const MAX_ERROR_BODY: usize = 512;
/// The manifest types asked for: an OCI image manifest (what Wasm artifacts and
/// cosign signatures are), and Docker's v2 schema 2, which some registries answer.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// The media type of the referrers API's answer.
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{registry}: {error}")]
    Http { registry: String, error: String },
    #[error("{registry}: {what}: HTTP {status}{body}")]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{registry}: {what} is larger than the limit of {limit} bytes")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    #[error("{registry}: {what} has digest {actual}, not {expected}")]
    Digest {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{registry}: no answer within {0:?} (the registry's `timeout`)", .timeout)]
    Timeout { registry: String, timeout: Duration },
    #[error("{registry}: {0}", .why)]
    Auth { registry: String, why: String },
    #[error("{registry}: its `ca` {path}: {why}")]
    Ca {
        registry: String,
        path: String,
        why: String,
    },
}

impl ClientError {
    /// Whether trying again later may help: the network, a timeout, a 5xx or 429.
    pub fn transient(&self) -> bool {
        match self {
            ClientError::Http { .. } | ClientError::Timeout { .. } => true,
            ClientError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Plain HTTP: only when the config says `insecure = true`.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// One operation's deadline.
    pub timeout: Duration,
    /// PEM certificates to trust besides the system's, for a registry whose
    /// certificate a private authority issued.
    pub ca: Option<std::path::PathBuf>,
}

/// A client of one registry.
pub struct Client {
    http: reqwest::Client,
    registry: String,
    settings: Settings,
    /// The `Authorization` value the last challenge led to, reused until refused.
    authorization: tokio::sync::Mutex<Option<HeaderValue>>,
}

/// A manifest as read: its bytes and (recomputed) digest.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Client {
    pub fn new(registry: &str, settings: Settings) -> Result<Client, ClientError> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if downgrade {
                let to = attempt.url().to_string();
                attempt.error(format!("refused a redirect from https to http ({to})"))
            } else {
                attempt.follow()
            }
        });
        let ca_error = |path: &std::path::Path, why: String| ClientError::Ca {
            registry: registry.to_owned(),
            path: path.display().to_string(),
            why,
        };
        let mut roots = Vec::new();
        if let Some(path) = &settings.ca {
            let pem = std::fs::read(path).map_err(|e| ca_error(path, e.to_string()))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| ca_error(path, "not PEM certificates".into()))?;
        }
        let http = reqwest::Client::builder()
            .redirect(policy)
            .user_agent(concat!("healthhost/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| ClientError::Http {
                registry: registry.to_owned(),
                error: e.to_string(),
            })?;
        Ok(Client {
            http,
            registry: registry.to_owned(),
            settings,
            authorization: tokio::sync::Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.settings.insecure {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{path}", self.registry)
    }

    /// The manifest `target` (a tag or a digest) of `repository`; `None` when the
    /// registry has none.
    pub async fn manifest(
        &self,
        repository: &str,
        target: &str,
    ) -> Result<Option<Manifest>, ClientError> {
        let what = format!("manifest {repository}:{target}");
        let url = self.url(&format!("{repository}/manifests/{target}"));
        self.deadline(async {
            let response = self
                .send(Method::GET, &url, repository, false, |r| {
                    r.header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = self.ok(response, &what).await?;
            let bytes = self.body(response, &what, MAX_MANIFEST_BYTES).await?;
            let digest = sha256(&bytes);
            if target.starts_with("sha256:") && digest != target {
                return Err(self.mismatch(&what, target, &digest));
            }
            Ok(Some(Manifest { bytes, digest }))
        })
        .await
    }

    /// The referrers of the manifest `digest` of `repository` with `artifact_type`, as
    /// the OCI 1.1 referrers API answers (an image index); `None` when the registry
    /// does not have the API.
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let what = format!("referrers of {repository}@{digest}");
        let mut url = reqwest::Url::parse(&self.url(&format!("{repository}/referrers/{digest}")))
            .map_err(|e| self.auth_error(&format!("bad referrers URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("artifactType", artifact_type);
        self.deadline(async {
            let response = self
                .send(Method::GET, url.as_str(), repository, false, |r| {
                    r.header(ACCEPT, INDEX_MEDIA_TYPE)
                })
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = self.ok(response, &what).await?;
            Ok(Some(self.body(response, &what, MAX_MANIFEST_BYTES).await?))
        })
        .await
    }

    /// The blob `digest` of `repository`, at most `max` bytes, its digest checked.
    pub async fn blob(
        &self,
        repository: &str,
        digest: &str,
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let what = format!("blob {digest}");
        let url = self.url(&format!("{repository}/blobs/{digest}"));
        self.deadline(async {
            let response = self
                .send(Method::GET, &url, repository, false, |r| r)
                .await?;
            let response = self.ok(response, &what).await?;
            let bytes = self.body(response, &what, max).await?;
            let actual = sha256(&bytes);
            if actual != digest {
                return Err(self.mismatch(&what, digest, &actual));
            }
            Ok(bytes)
        })
        .await
    }

    /// Uploads `bytes` as a blob of `repository` unless the registry has it.
    pub async fn put_blob(&self, repository: &str, bytes: &[u8]) -> Result<String, ClientError> {
        let digest = sha256(bytes);
        let what = format!("upload of {digest}");
        self.deadline(async {
            let head = self.url(&format!("{repository}/blobs/{digest}"));
            if self
                .send(Method::HEAD, &head, repository, true, |r| r)
                .await?
                .status()
                .is_success()
            {
                return Ok(digest.clone());
            }
            let start = self.url(&format!("{repository}/blobs/uploads/"));
            let response = self
                .send(Method::POST, &start, repository, true, |r| r)
                .await?;
            let response = self.ok(response, &what).await?;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.auth_error("the upload answer has no Location"))?;
            let mut url = reqwest::Url::parse(&self.url(""))
                .and_then(|base| base.join(location))
                .map_err(|e| self.auth_error(&format!("bad upload Location: {e}")))?;
            url.query_pairs_mut().append_pair("digest", &digest);
            let body = bytes.to_vec();
            let response = self
                .send(Method::PUT, url.as_str(), repository, true, move |r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                })
                .await?;
            self.ok(response, &what).await?;
            Ok(digest.clone())
        })
        .await
    }

    /// Uploads a manifest as `target` (a tag or its digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        target: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, ClientError> {
        let what = format!("upload of manifest {repository}:{target}");
        let url = self.url(&format!("{repository}/manifests/{target}"));
        let (body, media_type) = (bytes.to_vec(), media_type.to_owned());
        self.deadline(async {
            let response = self
                .send(Method::PUT, &url, repository, true, move |r| {
                    r.header(CONTENT_TYPE, media_type.clone())
                        .body(body.clone())
                })
                .await?;
            self.ok(response, &what).await?;
            Ok(sha256(bytes))
        })
        .await
    }

    async fn deadline<T>(
        &self,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    registry: self.registry.clone(),
                    timeout: self.settings.timeout,
                })
            })
    }

    /// Sends a request with the credentials the registry last asked for; on a 401,
    /// answers its challenge (Basic, or a token from its Bearer realm) and sends again.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repository: &str,
        push: bool,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let known = self.authorization.lock().await.clone();
        let attempt = |auth: Option<HeaderValue>| {
            let mut request = build(self.http.request(method.clone(), url));
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            request.send()
        };
        let response = attempt(known.clone())
            .await
            .map_err(|e| self.http_error(e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let scope = format!(
            "repository:{repository}:{}",
            if push { "pull,push" } else { "pull" }
        );
        let auth = self.answer(&challenge, &scope).await?;
        *self.authorization.lock().await = Some(auth.clone());
        attempt(Some(auth)).await.map_err(|e| self.http_error(e))
    }

    /// The `Authorization` value that answers `challenge`.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<HeaderValue, ClientError> {
        let basic = match (&self.settings.username, &self.settings.password) {
            (Some(user), password) => Some(base64::engine::general_purpose::STANDARD.encode(
                format!("{user}:{}", password.as_deref().unwrap_or_default()),
            )),
            _ => None,
        };
        let header = |value: String| {
            HeaderValue::from_str(&value)
                .map_err(|_| self.auth_error("credentials that are not a header value"))
        };
        let (kind, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if kind.eq_ignore_ascii_case("basic") {
            let basic = basic.ok_or_else(|| {
                self.auth_error("the registry wants a user name and password: set username and password under [registries]")
            })?;
            return header(format!("Basic {basic}"));
        }
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(self.auth_error(&format!(
                "refused the request (HTTP 401, challenge '{challenge}')"
            )));
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.auth_error("a Bearer challenge without a realm"))?;
        let mut url = reqwest::Url::parse(&realm)
            .map_err(|e| self.auth_error(&format!("bad token realm: {e}")))?;
        if url.scheme() == "http" && !self.settings.insecure {
            return Err(self.auth_error("the token realm is plain http on an https registry"));
        }
        let service = params
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone());
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", &service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.http.get(url);
        if let Some(basic) = &basic {
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        let response = request.send().await.map_err(|e| self.http_error(e))?;
        let response = self.ok(response, "token request").await?;
        let body = self
            .body(response, "token answer", MAX_MANIFEST_BYTES)
            .await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| self.auth_error(&format!("the token answer is not JSON: {e}")))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| self.auth_error("the token answer has no token"))?;
        header(format!("Bearer {token}"))
    }

    /// `response` when it succeeded, else its status and the start of its body.
    async fn ok(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = self
            .body(response, what, MAX_ERROR_BODY as u64)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let body: String = body
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_ERROR_BODY)
            .collect();
        Err(ClientError::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status,
            body: if body.is_empty() {
                String::new()
            } else {
                format!(": {body}")
            },
        })
    }

    /// The body, refused as soon as it passes `max` bytes.
    async fn body(
        &self,
        mut response: reqwest::Response,
        what: &str,
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::TooLarge {
            registry: self.registry.clone(),
            what: what.to_owned(),
            limit: max,
        };
        if response.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.http_error(e))? {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    fn http_error(&self, error: reqwest::Error) -> ClientError {
        use std::error::Error;
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            text = format!("{text}: {e}");
            source = e.source();
        }
        if !self.settings.insecure && text.contains("InvalidContentType") {
            text.push_str(&format!(
                " (the registry answered plain HTTP to HTTPS: if it is meant to, set insecure = true under [registries.\"{}\"])",
                self.registry
            ));
        }
        ClientError::Http {
            registry: self.registry.clone(),
            error: text,
        }
    }

    fn mismatch(&self, what: &str, expected: &str, actual: &str) -> ClientError {
        ClientError::Digest {
            registry: self.registry.clone(),
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        }
    }

    fn auth_error(&self, why: &str) -> ClientError {
        ClientError::Auth {
            registry: self.registry.clone(),
            why: why.to_owned(),
        }
    }
}

/// The `key="value"` pairs of a challenge.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((key, value.to_owned()));
        rest = next.trim_start_matches(',').trim();
    }
    params
}

#[cfg(test)]
mod tests {
    #[test]
    fn challenges_are_read_with_quoted_commas() {
        let params = super::challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            params,
            [
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into())
            ]
        );
    }
}
