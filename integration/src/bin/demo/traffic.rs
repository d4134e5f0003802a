//! The demo's request mix: every scenario of the GKE and ACK guides, chat and
//! completions, streaming and not, and what came back from each request.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use integration::e2e::http::{HttpClient, Reply};

/// One kind of request the demo sends.
pub struct RequestKind {
    /// Which route of envoy.yaml (`x-route` header); `None` is the default route.
    pub route: Option<&'static str>,
    pub chat: bool,
    pub model: &'static str,
    pub objective: Option<&'static str>,
    pub stream: bool,
    /// Relative frequency in the mix.
    pub weight: u32,
}

/// The mix: the ACK base-model canary (default route), the ACK LoRA canary and
/// the GKE pool with its adapters and InferenceObjectives.
pub const MIX: &[RequestKind] = &[
    RequestKind {
        route: None,
        chat: true,
        model: "mymodel",
        objective: None,
        stream: false,
        weight: 3,
    },
    RequestKind {
        route: None,
        chat: false,
        model: "mymodel",
        objective: None,
        stream: true,
        weight: 1,
    },
    RequestKind {
        route: Some("ack-lora"),
        chat: true,
        model: "travelhelper",
        objective: None,
        stream: false,
        weight: 2,
    },
    RequestKind {
        route: Some("ack-lora"),
        chat: true,
        model: "travelhelper",
        objective: None,
        stream: true,
        weight: 1,
    },
    RequestKind {
        route: Some("gke"),
        chat: false,
        model: "food-review",
        objective: Some("food-review"),
        stream: false,
        weight: 2,
    },
    RequestKind {
        route: Some("gke"),
        chat: true,
        model: "cad-fabricator",
        objective: Some("cad-fabricator"),
        stream: true,
        weight: 1,
    },
    RequestKind {
        route: Some("gke"),
        chat: false,
        model: "meta-llama/Llama-3.1-8B-Instruct",
        objective: Some("llama3-base-model"),
        stream: false,
        weight: 1,
    },
];

const PROMPTS: &[&str] = &[
    "I just arrived in Beijing, please recommend a tourist attraction",
    "Write as if you were a critic: San Francisco's best ramen",
    "Design a bracket that holds a 2 kg shelf",
    "Summarize the plot of a heist movie in three sentences",
    "Plan a two-day trip to Hangzhou",
];

/// A deterministic pseudo-random stream (the demo is reproducible).
pub struct Mixer(u64);

impl Mixer {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next request: its kind and body.
    pub fn next_request(&mut self) -> (&'static RequestKind, String) {
        let total: u32 = MIX.iter().map(|k| k.weight).sum();
        let mut pick = (self.next() % u64::from(total)) as u32;
        let kind = MIX
            .iter()
            .find(|k| {
                if pick < k.weight {
                    true
                } else {
                    pick -= k.weight;
                    false
                }
            })
            .expect("pick < total");
        let prompt = PROMPTS[(self.next() % PROMPTS.len() as u64) as usize];
        let max_tokens = 16 + self.next() % 48;
        let mut body = if kind.chat {
            serde_json::json!({"model": kind.model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt}]})
        } else {
            // As the GKE guide sends it: temperature as a string.
            serde_json::json!({"model": kind.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": "0"})
        };
        if kind.stream {
            body["stream"] = true.into();
        }
        (kind, body.to_string())
    }
}

/// Sends one request of `kind` through the gateway.
pub async fn send(
    client: &HttpClient,
    gateway: &str,
    kind: &RequestKind,
    body: String,
) -> anyhow::Result<Reply> {
    let path = if kind.chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(route) = kind.route {
        headers.push(("x-route", route));
    }
    if let Some(objective) = kind.objective {
        headers.push(("x-gateway-inference-objective", objective));
    }
    client
        .post(&format!("{gateway}{path}"), &headers, body)
        .await
}

/// The `model` a reply names: the JSON body's, or a stream's first event's.
pub fn served_model(reply: &Reply) -> Option<String> {
    if let Ok(json) = reply.json() {
        return json["model"].as_str().map(str::to_string);
    }
    let text = reply.text();
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .find_map(|event| event["model"].as_str().map(str::to_string))
}

/// What happened so far.
pub struct Tally {
    pub started: Instant,
    pub sent: usize,
    pub ok: usize,
    /// 429: sheddable requests refused while the pool is saturated.
    pub shed: usize,
    pub failed: usize,
    pub recent_errors: VecDeque<String>,
    /// Per pod: requests served and the target models they were served as.
    pub by_pod: BTreeMap<String, BTreeMap<String, usize>>,
    /// Pods that served the default route (ACK base-model canary).
    pub split_pods: BTreeMap<String, usize>,
    /// Models that served the ACK LoRA canary.
    pub lora_models: BTreeMap<String, usize>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            sent: 0,
            ok: 0,
            shed: 0,
            failed: 0,
            recent_errors: VecDeque::new(),
            by_pod: BTreeMap::new(),
            split_pods: BTreeMap::new(),
            lora_models: BTreeMap::new(),
        }
    }

    /// Records the outcome of one request.
    pub fn record(&mut self, kind: &RequestKind, outcome: anyhow::Result<Reply>) {
        let reply = match outcome {
            Ok(reply) if reply.status.is_success() => reply,
            Ok(reply) if reply.status == 429 => {
                self.shed += 1;
                return;
            }
            Ok(reply) => {
                let text = reply.text();
                return self.error(format!("{} {}: {}", kind.model, reply.status, text.trim()));
            }
            Err(e) => return self.error(format!("{}: {e:#}", kind.model)),
        };
        self.ok += 1;
        let pod = reply.served_by().unwrap_or("(unknown pod)").to_string();
        let model = served_model(&reply).unwrap_or_else(|| "(no model)".to_string());
        *self
            .by_pod
            .entry(pod.clone())
            .or_default()
            .entry(model.clone())
            .or_default() += 1;
        match kind.route {
            None => *self.split_pods.entry(pod).or_default() += 1,
            Some("ack-lora") => *self.lora_models.entry(model).or_default() += 1,
            Some(_) => {}
        }
    }

    fn error(&mut self, message: String) {
        self.failed += 1;
        let mut message = message;
        message.truncate(160);
        self.recent_errors.push_back(message);
        if self.recent_errors.len() > 3 {
            self.recent_errors.pop_front();
        }
    }
}
