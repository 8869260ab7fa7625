//! IoT device-event subscriptions: the subscription codes, the parameter
//! shapes, the topic names they map to, and the keys an event matches.
//! Shared by the edge (subscriptions) and the router (event ingestion), so
//! both derive the same topic for the same (code, params).

use serde_json::{Map, Value};

/// Subscription codes, as on the wire.
pub const CODES: [&str; 6] = [
    "devicePropertyReport",
    "devicePropertyReportV2",
    "devicePublish",
    "deviceActionReport",
    "deviceConn",
    "deviceOtaReport",
];

/// Codes whose subscriptions may name a property identifier.
pub fn is_property_code(code: &str) -> bool {
    code == "devicePropertyReport" || code == "devicePropertyReportV2"
}

/// A refusal naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IotError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> IotError {
    IotError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// One subscription's parameters, in one of the four shapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shape {
    Property {
        product: String,
        device: String,
        identifier: String,
    },
    Device {
        product: String,
        device: String,
    },
    Project {
        project: String,
    },
    Area {
        project: String,
        area: String,
    },
}

/// Longest subscription parameter (`00-common.md`, "Frames": lengths),
/// checked before anything is stored.
pub const MAX_PARAM_LEN: usize = 128;

impl Shape {
    /// Parses params that have exactly one of the allowed key sets, with
    /// non-empty string values.
    pub fn parse(code: &str, params: &Value) -> Result<Self, IotError> {
        let Value::Object(map) = params else {
            return Err(error("params", "params must be an object"));
        };
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let get = |key: &str| -> Result<String, IotError> {
            match map.get(key) {
                Some(Value::String(s)) if s.len() > MAX_PARAM_LEN => Err(error(
                    key,
                    format!("params.{key} is longer than {MAX_PARAM_LEN} bytes"),
                )),
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(error(
                    key,
                    format!("params.{key} must be a non-empty string"),
                )),
            }
        };
        let shape = match keys.as_slice() {
            ["deviceName", "identifier", "productID"] => Shape::Property {
                product: get("productID")?,
                device: get("deviceName")?,
                identifier: get("identifier")?,
            },
            ["deviceName", "productID"] => Shape::Device {
                product: get("productID")?,
                device: get("deviceName")?,
            },
            ["projectID"] => Shape::Project {
                project: get("projectID")?,
            },
            ["areaID", "projectID"] => Shape::Area {
                project: get("projectID")?,
                area: get("areaID")?,
            },
            _ => {
                return Err(error(
                    "params",
                    "params must be {productID,deviceName,identifier}, {productID,deviceName}, {projectID} or {projectID,areaID}",
                ));
            }
        };
        if matches!(shape, Shape::Property { .. }) && !is_property_code(code) {
            return Err(error(
                "params",
                "the identifier shape is only for devicePropertyReport and devicePropertyReportV2",
            ));
        }
        Ok(shape)
    }

    /// The project the shape names, if any (for project scoping).
    pub fn project(&self) -> Option<&str> {
        match self {
            Shape::Project { project } | Shape::Area { project, .. } => Some(project),
            _ => None,
        }
    }

    /// The topic name of a subscription to `code` with this shape: a JSON
    /// array, so no value can make two keys collide.
    pub fn topic_name(&self, code: &str) -> String {
        let parts: Vec<&str> = match self {
            Shape::Property {
                product,
                device,
                identifier,
            } => vec![code, "property", product, device, identifier],
            Shape::Device { product, device } => vec![code, "device", product, device],
            Shape::Project { project } => vec![code, "project", project],
            Shape::Area { project, area } => vec![code, "area", project, area],
        };
        serde_json::to_string(&parts).unwrap_or_default()
    }
}

/// Checks a subscription code.
pub fn parse_code(code: &Value) -> Result<&str, IotError> {
    match code {
        Value::String(c) if CODES.contains(&c.as_str()) => Ok(c.as_str()),
        Value::String(c) => Err(error("code", format!("unknown subscription code `{c}`"))),
        _ => Err(error("code", "code must be a string")),
    }
}

/// An event to push, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub code: String,
    pub project: Option<String>,
    pub area: Option<String>,
    pub body: Map<String, Value>,
}

/// Validates an ingestion body: `{"code", "projectID"?, "areaID"?, "body": {"device": {...}, ...}}`.
pub fn parse_event(mut input: Map<String, Value>) -> Result<Event, IotError> {
    let code = parse_code(input.get("code").unwrap_or(&Value::Null))?.to_owned();
    let optional = |input: &Map<String, Value>, key: &str| -> Result<Option<String>, IotError> {
        match input.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(error(key, format!("{key} must be a non-empty string"))),
        }
    };
    let project = optional(&input, "projectID")?;
    let area = optional(&input, "areaID")?;
    if area.is_some() && project.is_none() {
        return Err(error("projectID", "areaID needs projectID"));
    }
    let Some(Value::Object(body)) = input.remove("body") else {
        return Err(error("body", "body must be an object"));
    };
    let device = body.get("device").and_then(Value::as_object);
    for key in ["productID", "deviceName"] {
        match device.and_then(|d| d.get(key)) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(error(
                    &format!("body.device.{key}"),
                    format!("body.device.{key} must be a non-empty string"),
                ));
            }
        }
    }
    if code == "devicePropertyReport" {
        match body.get("identifier") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(error(
                    "body.identifier",
                    "body.identifier must be a non-empty string",
                ));
            }
        }
    }
    if code == "devicePropertyReportV2" && !body.get("params").is_some_and(Value::is_object) {
        return Err(error("body.params", "body.params must be an object"));
    }
    Ok(Event {
        code,
        project,
        area,
        body,
    })
}

impl Event {
    /// Every subscription shape this event satisfies, as topic names.
    pub fn topic_names(&self) -> Vec<String> {
        let device = self.body.get("device").and_then(Value::as_object);
        let text = |key: &str| {
            device
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (product, device_name) = (text("productID"), text("deviceName"));
        let mut shapes = vec![Shape::Device {
            product: product.clone(),
            device: device_name.clone(),
        }];
        let identifiers: Vec<String> = match self.code.as_str() {
            "devicePropertyReport" => self
                .body
                .get("identifier")
                .and_then(Value::as_str)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default(),
            "devicePropertyReportV2" => self
                .body
                .get("params")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for identifier in identifiers {
            shapes.push(Shape::Property {
                product: product.clone(),
                device: device_name.clone(),
                identifier,
            });
        }
        if let Some(project) = &self.project {
            shapes.push(Shape::Project {
                project: project.clone(),
            });
            if let Some(area) = &self.area {
                shapes.push(Shape::Area {
                    project: project.clone(),
                    area: area.clone(),
                });
            }
        }
        shapes.iter().map(|s| s.topic_name(&self.code)).collect()
    }

    /// The push every matching socket receives.
    pub fn push(&self) -> Value {
        serde_json::json!({
            "code": 200,
            "msg": "成功",
            "type": "down.pub",
            "path": self.code,
            "body": self.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn four_shapes_exactly() {
        let code = "devicePropertyReport";
        assert!(matches!(
            Shape::parse(
                code,
                &json!({"productID":"p","deviceName":"d","identifier":"i"})
            ),
            Ok(Shape::Property { .. })
        ));
        assert!(matches!(
            Shape::parse(code, &json!({"productID":"p","deviceName":"d"})),
            Ok(Shape::Device { .. })
        ));
        assert!(matches!(
            Shape::parse(code, &json!({"projectID":"j"})),
            Ok(Shape::Project { .. })
        ));
        assert!(matches!(
            Shape::parse(code, &json!({"projectID":"j","areaID":"a"})),
            Ok(Shape::Area { .. })
        ));
        for bad in [
            json!({}),
            json!({"productID":"p"}),
            json!({"productID":"p","deviceName":"d","extra":1}),
            json!({"areaID":"a"}),
            json!([1]),
            json!("x"),
        ] {
            assert_eq!(
                Shape::parse(code, &bad).unwrap_err().field,
                "params",
                "{bad}"
            );
        }
        assert_eq!(
            Shape::parse(code, &json!({"projectID": 5}))
                .unwrap_err()
                .field,
            "projectID"
        );
        assert_eq!(
            Shape::parse(code, &json!({"projectID": ""}))
                .unwrap_err()
                .field,
            "projectID"
        );
    }

    #[test]
    fn params_are_at_most_128_bytes() {
        let at = "p".repeat(MAX_PARAM_LEN);
        assert!(Shape::parse("deviceConn", &json!({"projectID": at})).is_ok());
        let over = "p".repeat(MAX_PARAM_LEN + 1);
        for params in [
            json!({"projectID": over}),
            json!({"projectID": "p", "areaID": over}),
            json!({"productID": over, "deviceName": "d"}),
        ] {
            let err = Shape::parse("deviceConn", &params).unwrap_err();
            assert!(err.to_string().contains("longer than 128 bytes"), "{err}");
        }
    }

    #[test]
    fn property_shape_only_for_property_reports() {
        let params = json!({"productID":"p","deviceName":"d","identifier":"i"});
        assert!(Shape::parse("devicePropertyReportV2", &params).is_ok());
        for code in [
            "devicePublish",
            "deviceActionReport",
            "deviceConn",
            "deviceOtaReport",
        ] {
            assert_eq!(Shape::parse(code, &params).unwrap_err().field, "params");
        }
    }

    #[test]
    fn codes() {
        for code in CODES {
            assert_eq!(parse_code(&json!(code)), Ok(code));
        }
        assert_eq!(parse_code(&json!("deviceFly")).unwrap_err().field, "code");
        assert_eq!(parse_code(&json!(1)).unwrap_err().field, "code");
    }

    #[test]
    fn topic_names_do_not_collide() {
        let a = Shape::Device {
            product: "a|b".into(),
            device: "c".into(),
        };
        let b = Shape::Device {
            product: "a".into(),
            device: "b|c".into(),
        };
        assert_ne!(a.topic_name("deviceConn"), b.topic_name("deviceConn"));
        assert_ne!(a.topic_name("deviceConn"), a.topic_name("devicePublish"));
    }

    fn event(value: Value) -> Result<Event, IotError> {
        let Value::Object(map) = value else { panic!() };
        parse_event(map)
    }

    #[test]
    fn events_match_every_shape_they_satisfy() {
        let e = event(json!({"code":"devicePropertyReport","projectID":"j","areaID":"a",
            "body":{"device":{"productID":"p","deviceName":"d"},"identifier":"power","param":{"power":1}}})).unwrap();
        let names = e.topic_names();
        let c = "devicePropertyReport";
        let expected = [
            Shape::Device {
                product: "p".into(),
                device: "d".into(),
            }
            .topic_name(c),
            Shape::Property {
                product: "p".into(),
                device: "d".into(),
                identifier: "power".into(),
            }
            .topic_name(c),
            Shape::Project {
                project: "j".into(),
            }
            .topic_name(c),
            Shape::Area {
                project: "j".into(),
                area: "a".into(),
            }
            .topic_name(c),
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn v2_matches_each_params_key() {
        let e = event(json!({"code":"devicePropertyReportV2",
            "body":{"device":{"productID":"p","deviceName":"d"},"params":{"a":1,"b":2}}}))
        .unwrap();
        let c = "devicePropertyReportV2";
        let names = e.topic_names();
        assert_eq!(names.len(), 3);
        for id in ["a", "b"] {
            let name = Shape::Property {
                product: "p".into(),
                device: "d".into(),
                identifier: id.into(),
            }
            .topic_name(c);
            assert!(names.contains(&name));
        }
    }

    #[test]
    fn invalid_events_name_the_field() {
        let cases = [
            (json!({"body":{}}), "code"),
            (json!({"code":"deviceConn"}), "body"),
            (
                json!({"code":"deviceConn","body":{}}),
                "body.device.productID",
            ),
            (
                json!({"code":"deviceConn","body":{"device":{"productID":"p"}}}),
                "body.device.deviceName",
            ),
            (
                json!({"code":"devicePropertyReport","body":{"device":{"productID":"p","deviceName":"d"}}}),
                "body.identifier",
            ),
            (
                json!({"code":"devicePropertyReportV2","body":{"device":{"productID":"p","deviceName":"d"}}}),
                "body.params",
            ),
            (
                json!({"code":"deviceConn","areaID":"a","body":{"device":{"productID":"p","deviceName":"d"}}}),
                "projectID",
            ),
            (
                json!({"code":"deviceConn","projectID":7,"body":{"device":{"productID":"p","deviceName":"d"}}}),
                "projectID",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(event(input.clone()).unwrap_err().field, field, "{input}");
        }
    }

    #[test]
    fn push_shape() {
        let e = event(json!({"code":"deviceConn","body":{"device":{"productID":"p","deviceName":"d"},"online":true}})).unwrap();
        assert_eq!(
            e.push(),
            json!({"code":200,"msg":"成功","type":"down.pub","path":"deviceConn","body":{"device":{"productID":"p","deviceName":"d"},"online":true}})
        );
    }
}
