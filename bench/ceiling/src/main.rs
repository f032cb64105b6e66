//! The ceiling of `scripts/bench-http`: a bare axum server that answers `GET PATH`
//! with a body read once from a file and held in memory, with the headers healthhost
//! sends. The benchmark gives it healthhost's own `/health` and `/metrics` bodies, so
//! the difference between the two servers is healthhost's work per request.
//!
//! Usage: `ceiling ADDR PATH=CONTENT_TYPE=FILE ...`

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .expect("usage: ceiling ADDR PATH=CONTENT_TYPE=FILE ...");
    let mut router = Router::new();
    for route in args {
        // The content type may hold `=` itself: the path ends at the first, the file
        // starts after the last.
        let parsed = route.split_once('=').and_then(|(path, rest)| {
            let (content_type, file) = rest.rsplit_once('=')?;
            Some((path, content_type, file))
        });
        let Some((path, content_type, file)) = parsed else {
            panic!("bad route '{route}': expected PATH=CONTENT_TYPE=FILE");
        };
        let body = Bytes::from(std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}")));
        let content_type = content_type.to_owned();
        router = router.route(
            path,
            get(move || {
                let (body, content_type) = (body.clone(), content_type.clone());
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            (header::CACHE_CONTROL, "no-store".to_owned()),
                        ],
                        body,
                    )
                }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    axum::serve(listener, router).await.expect("serving");
}
