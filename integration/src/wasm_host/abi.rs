//! Numeric codes and wire formats of proxy-wasm ABI 0.2.1, exactly as the Rust
//! SDK 0.2.5 (`proxy-wasm/src/types.rs`, `hostcalls.rs`) encodes them. Kept in
//! one place so a mismatch with the SDK is a one-line fix.

/// Return codes of host functions (`proxy_wasm::types::Status`).
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
}

/// What a stream callback tells the host to do next (`proxy_wasm::types::Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    pub(crate) fn from_raw(raw: i32) -> Result<Self, String> {
        match raw {
            0 => Ok(Action::Continue),
            1 => Ok(Action::Pause),
            other => Err(format!("callback returned unknown action {other}")),
        }
    }
}

/// Buffers a filter can read or write (`proxy_wasm::types::BufferType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    pub(crate) fn from_raw(raw: i32) -> Option<Self> {
        use BufferType::*;
        Some(match raw {
            0 => HttpRequestBody,
            1 => HttpResponseBody,
            2 => DownstreamData,
            3 => UpstreamData,
            4 => HttpCallResponseBody,
            5 => GrpcReceiveBuffer,
            6 => VmConfiguration,
            7 => PluginConfiguration,
            8 => CallData,
            _ => return None,
        })
    }
}

/// Header-like maps (`proxy_wasm::types::MapType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    HttpRequestHeaders,
    HttpRequestTrailers,
    HttpResponseHeaders,
    HttpResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_raw(raw: i32) -> Option<Self> {
        use MapType::*;
        Some(match raw {
            0 => HttpRequestHeaders,
            1 => HttpRequestTrailers,
            2 => HttpResponseHeaders,
            3 => HttpResponseTrailers,
            4 => GrpcReceiveInitialMetadata,
            5 => GrpcReceiveTrailingMetadata,
            6 => HttpCallResponseHeaders,
            7 => HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// Streams a filter can resume or close (`proxy_wasm::types::StreamType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream,
}

impl StreamType {
    pub(crate) fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// Kinds of Envoy stats a filter can define (`proxy_wasm::types::MetricType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub(crate) fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// Log levels (`proxy_wasm::types::LogLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: i32) -> Option<Self> {
        use LogLevel::*;
        Some(match raw {
            0 => Trace,
            1 => Debug,
            2 => Info,
            3 => Warn,
            4 => Error,
            5 => Critical,
            _ => return None,
        })
    }
}

/// gRPC status codes the host reports on stream close.
pub mod grpc_status {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNAVAILABLE: u32 = 14;
}

/// Encodes header pairs the way the SDK's `deserialize_map` reads them:
/// `count`, then `(key_len, value_len)` pairs, then NUL-terminated keys and values.
pub fn serialize_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Decodes a map the guest serialized (`serialize_map` in the SDK). Every
/// length is bounds-checked: a malformed map is a guest bug the host reports.
pub fn deserialize_map(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let read_u32 = |at: usize| -> Result<usize, String> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("serialized map truncated at byte {at}"))
    };
    let count = read_u32(0)?;
    let mut data_at = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .ok_or("serialized map count overflows")?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let key_len = read_u32(4 + index * 8)?;
        let value_len = read_u32(8 + index * 8)?;
        let key = bytes
            .get(data_at..data_at + key_len)
            .ok_or("serialized map key out of bounds")?;
        data_at += key_len + 1;
        let value = bytes
            .get(data_at..data_at + value_len)
            .ok_or("serialized map value out of bounds")?;
        data_at += value_len + 1;
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| "serialized map key is not UTF-8".to_string())?;
        pairs.push((key, value.to_vec()));
    }
    Ok(pairs)
}

/// Splits a property path (`["xds", "cluster_name"]` is sent as `xds\0cluster_name`).
pub fn split_property_path(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips_in_sdk_layout() {
        let pairs = vec![
            (":method".to_string(), b"GET".to_vec()),
            ("x-empty".to_string(), Vec::new()),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(&bytes[4..12], &[7, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(deserialize_map(&bytes).unwrap(), pairs);
    }

    #[test]
    fn truncated_map_is_an_error_not_a_panic() {
        let bytes = serialize_map(&[("key".to_string(), b"value".to_vec())]);
        for cut in 1..bytes.len() - 1 {
            assert!(deserialize_map(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(deserialize_map(&[255, 255, 255, 255]).is_err());
    }

    #[test]
    fn property_path_splits_on_nul() {
        assert_eq!(
            split_property_path(b"xds\0cluster_name"),
            vec!["xds".to_string(), "cluster_name".to_string()]
        );
        assert!(split_property_path(b"").is_empty());
    }
}
