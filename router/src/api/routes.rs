//! The server API's routes, parsed once from method and path into one
//! [`Route`], with its path parameters as they came (checked by their
//! handlers, after authentication). The list of routes the OpenAPI
//! document is checked against is [`Route::ALL`].

use http::Method;

/// A route of the server API, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'p> {
    OpenApi,
    GroupMessages { group_id: &'p str },
    GroupPresence { group_id: &'p str },
    Broadcast,
    Stats,
    IotEvents,
    Notify,
    Stream,
    AppPublish { app_id: &'p str },
    ToolCall { app_id: &'p str, tool_id: &'p str },
    DeviceStatus { hd_id: &'p str },
    ImMessages,
    ConversationOwner { conv_id: &'p str },
    History,
}

/// Why a request names no route it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted<'p> {
    /// No route has this path.
    NoRoute,
    /// The path is this route's; the method is not.
    WrongMethod(Route<'p>),
}

impl Route<'static> {
    /// Every route, each path parameter holding its name in braces, so
    /// that [`Route::path`] gives the OpenAPI document's template.
    pub const ALL: [Route<'static>; 14] = [
        Route::OpenApi,
        Route::GroupMessages {
            group_id: "{group_id}",
        },
        Route::GroupPresence {
            group_id: "{group_id}",
        },
        Route::Broadcast,
        Route::Stats,
        Route::IotEvents,
        Route::Notify,
        Route::Stream,
        Route::AppPublish { app_id: "{appId}" },
        Route::ToolCall {
            app_id: "{appId}",
            tool_id: "{toolId}",
        },
        Route::DeviceStatus { hd_id: "{hdId}" },
        Route::ImMessages,
        Route::ConversationOwner {
            conv_id: "{convId}",
        },
        Route::History,
    ];
}

impl<'p> Route<'p> {
    /// The route `method` and `path` ask for. A path parameter is one
    /// whole segment, possibly empty, never decoded.
    pub fn parse(method: &Method, path: &'p str) -> Result<Self, Unrouted<'p>> {
        let route = Self::at(path).ok_or(Unrouted::NoRoute)?;
        if *method == route.method() {
            Ok(route)
        } else {
            Err(Unrouted::WrongMethod(route))
        }
    }

    /// The route whose path this is, whatever the method.
    fn at(path: &'p str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["api", "v1", "openapi.json"] => Self::OpenApi,
            ["api", "v1", "groups", group_id, "messages"] => Self::GroupMessages { group_id },
            ["api", "v1", "groups", group_id, "presence"] => Self::GroupPresence { group_id },
            ["api", "v1", "broadcast"] => Self::Broadcast,
            ["api", "v1", "stats"] => Self::Stats,
            ["api", "v1", "iot", "events"] => Self::IotEvents,
            ["api", "v1", "notify"] => Self::Notify,
            ["api", "v1", "stream"] => Self::Stream,
            ["api", "v1", "apps", app_id, "publish"] => Self::AppPublish { app_id },
            ["api", "v1", "apps", app_id, "tools", tool_id, "call"] => {
                Self::ToolCall { app_id, tool_id }
            }
            ["api", "v1", "devices", hd_id, "status"] => Self::DeviceStatus { hd_id },
            ["api", "v1", "im", "messages"] => Self::ImMessages,
            ["api", "v1", "conversations", conv_id] => Self::ConversationOwner { conv_id },
            ["api", "v1", "history"] => Self::History,
            _ => return None,
        })
    }

    /// The one method the route accepts.
    pub fn method(&self) -> Method {
        match self {
            Self::OpenApi
            | Self::GroupPresence { .. }
            | Self::Stats
            | Self::History
            | Self::DeviceStatus { .. } => Method::GET,
            Self::ConversationOwner { .. } => Method::PUT,
            Self::GroupMessages { .. }
            | Self::Broadcast
            | Self::IotEvents
            | Self::Notify
            | Self::Stream
            | Self::AppPublish { .. }
            | Self::ToolCall { .. }
            | Self::ImMessages => Method::POST,
        }
    }

    /// The route's metric label, a closed set.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OpenApi => "openapi",
            Self::GroupMessages { .. } => "group_messages",
            Self::GroupPresence { .. } => "group_presence",
            Self::Broadcast => "broadcast",
            Self::Stats => "stats",
            Self::IotEvents => "iot_events",
            Self::Notify => "notify",
            Self::Stream => "stream",
            Self::AppPublish { .. } => "app_publish",
            Self::ToolCall { .. } => "tool_call",
            Self::DeviceStatus { .. } => "device_status",
            Self::ImMessages => "im_messages",
            Self::ConversationOwner { .. } => "conversation_owner",
            Self::History => "history",
        }
    }

    /// The path that [`Route::parse`] takes back to this route.
    pub fn path(&self) -> String {
        match self {
            Self::OpenApi => "/api/v1/openapi.json".to_owned(),
            Self::GroupMessages { group_id } => format!("/api/v1/groups/{group_id}/messages"),
            Self::GroupPresence { group_id } => format!("/api/v1/groups/{group_id}/presence"),
            Self::Broadcast => "/api/v1/broadcast".to_owned(),
            Self::Stats => "/api/v1/stats".to_owned(),
            Self::IotEvents => "/api/v1/iot/events".to_owned(),
            Self::Notify => "/api/v1/notify".to_owned(),
            Self::Stream => "/api/v1/stream".to_owned(),
            Self::AppPublish { app_id } => format!("/api/v1/apps/{app_id}/publish"),
            Self::ToolCall { app_id, tool_id } => {
                format!("/api/v1/apps/{app_id}/tools/{tool_id}/call")
            }
            Self::DeviceStatus { hd_id } => format!("/api/v1/devices/{hd_id}/status"),
            Self::ImMessages => "/api/v1/im/messages".to_owned(),
            Self::ConversationOwner { conv_id } => format!("/api/v1/conversations/{conv_id}"),
            Self::History => "/api/v1/history".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;

    #[test]
    fn every_route_parses_from_its_path_and_method() {
        for route in Route::ALL {
            let path = route.path();
            assert_eq!(Route::parse(&route.method(), &path), Ok(route), "{path}");
        }
        let labels: HashSet<_> = Route::ALL.iter().map(Route::label).collect();
        assert_eq!(labels.len(), Route::ALL.len(), "one label per route");
    }

    #[test]
    fn path_parameters_are_whole_raw_segments() {
        assert_eq!(
            Route::parse(&Method::POST, "/api/v1/apps/a%20b/tools/t.1/call"),
            Ok(Route::ToolCall {
                app_id: "a%20b",
                tool_id: "t.1"
            })
        );
        // An empty segment is still a parameter: its handler refuses it.
        assert_eq!(
            Route::parse(&Method::POST, "/api/v1/groups//messages"),
            Ok(Route::GroupMessages { group_id: "" })
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/api/v1/conversations/"),
            Ok(Route::ConversationOwner { conv_id: "" })
        );
        // Leading slashes are not segments.
        assert_eq!(
            Route::parse(&Method::GET, "//api/v1/stats"),
            Ok(Route::Stats)
        );
    }

    #[test]
    fn unknown_paths_are_no_route() {
        for path in [
            "/",
            "",
            "/api/v1",
            "/api/v1/",
            "/api/v2/stats",
            "/api/v1/stats/",
            "/api/v1/groups/g",
            "/api/v1/groups/g/messages/x",
            "/api/v1/conversations/c/x",
            "/api/v1/apps/a/tools/t",
            "/API/v1/stats",
        ] {
            assert_eq!(
                Route::parse(&Method::GET, path),
                Err(Unrouted::NoRoute),
                "{path}"
            );
        }
    }

    #[test]
    fn other_methods_are_refused_naming_the_route() {
        for route in Route::ALL {
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::HEAD,
                Method::PATCH,
                Method::OPTIONS,
            ] {
                if method != route.method() {
                    assert_eq!(
                        Route::parse(&method, &route.path()),
                        Err(Unrouted::WrongMethod(route)),
                        "{method} {}",
                        route.path()
                    );
                }
            }
        }
    }

    #[test]
    fn openapi_documents_every_route() {
        let doc: Value = serde_json::from_str(crate::api::OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
        let paths = doc["paths"].as_object().expect("paths");
        for route in Route::ALL {
            let (method, path) = (route.method(), route.path());
            let operation = &paths
                .get(&path)
                .unwrap_or_else(|| panic!("{path} is not documented"))
                [method.as_str().to_lowercase()];
            assert!(operation.is_object(), "{method} {path} is not documented");
        }
        assert_eq!(
            paths.len(),
            Route::ALL
                .iter()
                .map(Route::path)
                .collect::<HashSet<_>>()
                .len(),
            "the document lists a route the router does not serve"
        );
    }
}
