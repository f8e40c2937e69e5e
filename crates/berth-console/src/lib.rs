//! berth-console: the web console (DESIGN §1, "the web console at `/`").
//!
//! Plain HTML, CSS and JavaScript embedded in the binary with `include_str!`: no build step, no
//! CDN, nothing fetched from outside. The page talks to berth's own APIs from the browser, like
//! any AWS client, signing every request with SigV4 (`assets/sigv4.js`) with the access key the
//! user signs in with (kept in the tab's sessionStorage): `POST /` with `X-Amz-Target` for ECS (`AmazonEC2ContainerServiceV20141113.*`),
//! CloudWatch Logs (`Logs_20140328.*`) and CloudWatch (`GraniteServiceVersion20100801.*`,
//! awsJson1.0), and `GET /_berth/usage` for metering. A separate crate (one part, one crate, as
//! DESIGN §2 lays out) keeps the binary crate wiring only and lets the assets change without
//! touching the control plane.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The console page (`GET /`).
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The console script (`GET /_berth/console/app.js`).
pub const APP_JS: &str = include_str!("assets/app.js");
/// The console's SigV4 signer (`GET /_berth/console/sigv4.js`).
pub const SIGV4_JS: &str = include_str!("assets/sigv4.js");
/// The console style sheet (`GET /_berth/console/app.css`).
pub const APP_CSS: &str = include_str!("assets/app.css");

/// `GET /`: the console page.
pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's static assets under `/_berth/console/` (the page itself is [`index`], which the
/// server mounts on `GET /` next to the `POST /` API dispatch).
pub fn router() -> Router {
    Router::new()
        .route(
            "/_berth/console/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/_berth/console/sigv4.js",
            get(|| async { asset(SIGV4_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/_berth/console/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_self_contained() {
        assert!(INDEX_HTML.contains("/_berth/console/app.js"));
        assert!(INDEX_HTML.contains("/_berth/console/sigv4.js"));
        for text in [INDEX_HTML, APP_JS, APP_CSS, SIGV4_JS] {
            assert!(!text.contains("http://"), "no external URLs");
            assert!(!text.contains("https://"), "no external URLs");
        }
    }
}
