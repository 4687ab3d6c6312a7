//! GraphiQL, served by the facade itself: the page at `GET /graphql` (for browsers) and its
//! pinned assets, embedded in the binary (`facade/static/graphiql/`, vendored from npm with
//! their licences), so it works where there is no internet. The page sends the browser's
//! cookies and the `X-CSRFToken` read from the `csrftoken` cookie, so a logged-in browser can
//! run mutations.

use std::sync::LazyLock;

use poem::{
    Response, handler,
    http::{StatusCode, header},
    web::Path,
};

use crate::{error::json_response, pages::HtmlPage};

/// The vendored GraphiQL's version, part of every asset's path (so they can be cached forever).
pub const VERSION: &str = "3.9.0";

const PAGE: &str = include_str!("../static/graphiql.html");

/// (name, media type, bytes).
const ASSETS: [(&str, &str, &[u8]); 4] = [
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("../static/graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../static/graphiql/graphiql.min.css")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/graphiql/react-dom.production.min.js"),
    ),
];

/// Its scripts and styles from this origin; CodeMirror sets inline styles and GraphiQL's
/// icons are data URLs.
static GRAPHIQL: LazyLock<HtmlPage> = LazyLock::new(|| {
    HtmlPage::new(
        PAGE,
        &[
            ("script-src", "'self'"),
            ("style-src", "'self' 'unsafe-inline'"),
            ("img-src", "data:"),
            ("font-src", "data:"),
        ],
    )
});

/// The GraphiQL page.
pub fn page() -> Response {
    GRAPHIQL.response()
}

/// `GET /graphiql/{VERSION}/{name}`: a vendored asset, cacheable for a year (the path changes
/// with the version).
#[handler]
pub fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(served, _, _)| *served == name) {
        Some((_, media_type, bytes)) => Response::builder()
            .content_type(*media_type)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .body(*bytes),
        None => json_response(StatusCode::NOT_FOUND, &serde_json::json!({ "detail": "Not found." })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_the_assets_it_serves() {
        for source in PAGE.split("src=\"").skip(1).chain(PAGE.split("href=\"").skip(1)) {
            let path = source.split('"').next().unwrap_or_default();
            let name = path.strip_prefix(&format!("/graphiql/{VERSION}/")).unwrap_or_else(|| panic!("{path}"));
            assert!(ASSETS.iter().any(|(served, _, _)| *served == name), "{name} is not served");
        }
    }
}
