//! Load from another process: wrk (Debian's `wrk` package; `make bench-write` installs it),
//! so the load generator does not share the service's process, allocator and runtime. Its
//! figures are parsed from `wrk --latency`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// What one wrk run measured.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub requests: u64,
    /// Answers other than 2xx/3xx, and socket errors.
    pub errors: u64,
    pub throughput: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// `wrk` on the PATH, if there is one.
pub fn find() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| PathBuf::from(dir).join("wrk")).find(|p| p.is_file())
}

/// The wrk script: `POST`s a create with a new title each time, from `users` users.
pub fn create_script(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("create.lua");
    std::fs::write(
        &path,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"userId":"user-' .. (n % 50) .. '","title":"bench ' .. n .. '"}')
end
"#,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs wrk with `connections` connections on 2 threads for `duration` against `url`.
pub async fn run(
    wrk: &std::path::Path,
    script: &std::path::Path,
    url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<WrkRun> {
    let output = tokio::process::Command::new(wrk)
        .args(["-t2", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs().max(1)), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .await
        .with_context(|| format!("running {}", wrk.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse(text: &str) -> anyhow::Result<WrkRun> {
    let line = |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix));
    let words = |prefix: &str| -> anyhow::Result<Vec<&str>> {
        Ok(line(prefix).with_context(|| format!("no {prefix:?} line"))?.split_whitespace().collect())
    };
    let percentile = |p: &str| -> anyhow::Result<Duration> { duration(words(p)?.get(1).context("a latency")?) };
    let totals = text.lines().map(str::trim).find(|l| l.contains(" requests in ")).context("no request total")?;
    let requests: u64 = totals.split_whitespace().next().context("a count")?.parse().context("a request count")?;
    // "Latency  avg  stdev  max  +/-": the thread statistics, not "Latency Distribution".
    let latency = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 5 && w[0] == "Latency")
        .context("no latency statistics")?;
    let mut errors = 0;
    if let Some(non_2xx) = line("Non-2xx or 3xx responses:") {
        errors += non_2xx.rsplit(' ').next().context("a count")?.parse::<u64>()?;
    }
    if let Some(socket) = line("Socket errors:") {
        // "Socket errors: connect 0, read 0, write 0, timeout 0"
        errors += socket
            .trim_start_matches("Socket errors:")
            .split(',')
            .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(WrkRun {
        requests,
        errors,
        throughput: words("Requests/sec:")?.get(1).context("a rate")?.parse()?,
        p50: percentile("50%")?,
        p90: percentile("90%")?,
        p99: percentile("99%")?,
        max: duration(latency[3])?,
    })
}

/// `812.00us`, `4.80ms`, `1.02s`, `2.00m`.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {text:?}"))?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().with_context(|| format!("not a number: {text:?}"))?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}
