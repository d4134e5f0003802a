//! The gateway filter's own decision-time histogram (`llmgw_decision_time_us`:
//! the wall time of its routing decision inside V8, host calls included), read
//! from each Envoy's admin Prometheus endpoint before and after a body size's
//! rounds. The difference of `_sum` and `_count` is the mean for that size.

use std::time::Duration;

use anyhow::Result;
use integration::e2e::http::HttpClient;

/// Envoy merges its workers' histograms on each stats flush (5 s by
/// default); a reading waits one out so it covers every request before it.
pub const FLUSH: Duration = Duration::from_millis(5_500);

/// (sum µs, count) of the histogram; zeros when the Envoy has none (no
/// gateway filter).
pub async fn read(client: &HttpClient, admin: std::net::SocketAddr) -> Result<(f64, f64)> {
    let url = format!("http://{admin}/stats/prometheus?filter=llmgw_decision_time_us");
    let text = client.get(&url).await?.text();
    Ok(parse(&text))
}

fn parse(text: &str) -> (f64, f64) {
    let mut sum = 0.0;
    let mut count = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or_default();
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.ends_with("llmgw_decision_time_us_sum") {
            sum += value;
        } else if name.ends_with("llmgw_decision_time_us_count") {
            count += value;
        }
    }
    (sum, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sum_and_count_of_the_histogram() {
        let text = "# TYPE llmgw_decision_time_us histogram\n\
            llmgw_decision_time_us_bucket{le=\"5\"} 3\n\
            llmgw_decision_time_us_sum{} 41.5\n\
            llmgw_decision_time_us_count{} 4\n";
        assert_eq!(parse(text), (41.5, 4.0));
        assert_eq!(parse(""), (0.0, 0.0));
    }
}
