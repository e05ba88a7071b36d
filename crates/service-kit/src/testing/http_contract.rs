//! Checks of the HTTP surface every service must pass, run by each service's tests against the
//! service itself: its OpenAPI document names only routes the router has, its reference page
//! loads nothing from elsewhere, and a panic in a handler answers a problem.

use serde_json::Value;

/// The detail of the router's own 404 (`crate::problem::not_found`): a request that gets it
/// matched no route.
const NO_ROUTE: &str = "No such resource.";

/// Sends one request per operation of the document at `{base_url}/openapi.json` (path
/// parameters filled with a nil UUID) and fails for any that no route answers: the router's
/// own 404 or 405. Returns how many operations were checked.
pub async fn every_operation_is_routed(base_url: &str, headers: &[(&str, &str)]) -> usize {
    let http = reqwest::Client::new();
    let document: Value = http
        .get(format!("{base_url}/openapi.json"))
        .send()
        .await
        .expect("the document is served")
        .json()
        .await
        .expect("the document is JSON");
    assert_eq!(document["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "OpenAPI 3.1");
    let paths = document["paths"].as_object().expect("the document has paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = fill_parameters(path);
        for method in item.as_object().expect("a path item").keys() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else { continue };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                continue;
            }
            let mut request = http.request(method.clone(), format!("{base_url}{concrete}"));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("the service answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let unrouted = status == 405 || (status == 404 && body["detail"] == NO_ROUTE);
            assert!(!unrouted, "{method} {path} is documented but no route answers it: {status} {body}");
            checked += 1;
        }
    }
    checked
}

fn fill_parameters(path: &str) -> String {
    let mut filled = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        filled.push_str(&rest[..open]);
        filled.push_str("00000000-0000-0000-0000-000000000000");
        rest = &rest[close..];
    }
    filled.push_str(rest);
    filled
}

/// Every request of the repository's `http/*.http` files sent to `{{variable}}` names an
/// operation of the document at `{base_url}/openapi.json`: the files are the quick start and
/// the admin API as an editor sends them, and must not drift from the API. Returns how many
/// requests were checked.
pub async fn http_files_name_documented_operations(base_url: &str, variable: &str) -> usize {
    let document: Value = reqwest::get(format!("{base_url}/openapi.json")).await.unwrap().json().await.unwrap();
    let paths = document["paths"].as_object().expect("paths");
    let prefix = format!("{{{{{variable}}}}}");
    let dir = super::daprd::repository().join("http");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("the http/ folder") {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some((method, target)) = line.split_once(' ') else { continue };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
                continue;
            }
            let Some(path) = target.trim().strip_prefix(&prefix) else { continue };
            let path = path.split('?').next().unwrap();
            let documented = paths
                .iter()
                .any(|(template, item)| item.get(method.to_lowercase()).is_some() && template_matches(template, path));
            assert!(documented, "{}: {method} {path} is not an operation of the document", file.display());
            checked += 1;
        }
    }
    checked
}

/// `/todos/{id}` matches `/todos/{{created.response.body.id}}` and `/todos/0190…`.
fn template_matches(template: &str, path: &str) -> bool {
    let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template.iter().zip(&path).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// `GET /docs/` is an HTML page whose scripts and styles the service serves itself.
pub async fn reference_page_is_self_served(base_url: &str) {
    let http = reqwest::Client::new();
    let page = http.get(format!("{base_url}/docs/")).send().await.expect("the page is served");
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "a Swagger UI page: {html}");
    for attribute in ["src=\"", "href=\""] {
        for reference in html.split(attribute).skip(1).filter_map(|rest| rest.split('"').next()) {
            assert!(!reference.contains("//"), "the page loads {reference} from elsewhere");
            let asset = http.get(format!("{base_url}/docs/{}", reference.trim_start_matches("./"))).send().await;
            assert_eq!(asset.map(|a| a.status().as_u16()).ok(), Some(200), "the service serves {reference}");
        }
    }
}

/// A router served on a loopback port of its own, for as long as this lives.
pub struct Served {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(router: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.expect("serves") });
    Served { url, task }
}

/// The path [`panicking_route`]s are mounted at.
pub const PANIC_PATH: &str = "/test-only/panic";

/// A handler that panics, for a service's test to add to the routes it assembles.
pub async fn panicking_route() -> &'static str {
    panic!("a handler panicked on purpose")
}

/// `GET {url}{PANIC_PATH}` answers a problem+json 500 (not a dropped connection), and the
/// service goes on answering.
pub async fn a_panic_answers_a_problem(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let response =
            http.get(format!("{url}{PANIC_PATH}")).send().await.expect("an answer, not a dropped connection");
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "https://dapr-todo.example/problems/internal", "{body}");
    }
    let health = http.get(format!("{url}/healthz")).send().await.expect("still serving");
    assert_eq!(health.status(), 200);
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_match_concrete_paths() {
        assert!(super::template_matches("/todos/{id}", "/todos/{{created.response.body.id}}"));
        assert!(!super::template_matches("/todos/{id}", "/todos"));
        assert!(!super::template_matches("/todos/{id}/events", "/todos/x/complete"));
    }

    #[test]
    fn fills_path_parameters() {
        assert_eq!(super::fill_parameters("/todos/{id}/events"), "/todos/00000000-0000-0000-0000-000000000000/events");
        assert_eq!(super::fill_parameters("/healthz"), "/healthz");
    }
}
