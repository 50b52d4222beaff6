//! The EC2 Query protocol, response side: XML in the EC2 namespace, lists as `<item>`s, and
//! the AWS error document.

use crate::cloud::{InstanceState, Tags};

use super::state::{ImageRec, InstanceRec, OWNER};

/// The namespace of API version 2016-11-15.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// A small XML writer; text is escaped.
pub struct Xml {
    out: String,
    root: String,
}

pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '&' => s.push_str("&amp;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => s.push(c),
        }
    }
    s
}

impl Xml {
    /// Starts `<Root xmlns=…>` with its `requestId`.
    pub fn response(root: &str, request_id: &str) -> Self {
        let mut x = Xml {
            out: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{NAMESPACE}\">"
            ),
            root: root.to_string(),
        };
        x.leaf("requestId", request_id);
        x
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub fn leaf(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.out.push_str(&escape(text));
        self.close(tag)
    }

    pub fn finish(mut self) -> String {
        let root = std::mem::take(&mut self.root);
        self.close(&root);
        self.out
    }

    pub fn tag_set(&mut self, tags: &Tags) -> &mut Self {
        self.open("tagSet");
        for (k, v) in tags {
            self.open("item")
                .leaf("key", k)
                .leaf("value", v)
                .close("item");
        }
        self.close("tagSet")
    }

    pub fn state(&mut self, tag: &str, s: InstanceState) -> &mut Self {
        self.open(tag)
            .leaf("code", &s.code().to_string())
            .leaf("name", s.name())
            .close(tag)
    }

    /// One `<item>` of an `instancesSet`.
    pub fn instance(&mut self, i: &InstanceRec, region: &str) -> &mut Self {
        let ip = &i.private_ip;
        let dns = format!("ip-{}.{region}.compute.internal", ip.replace('.', "-"));
        // Same forms as `api::filter::{private_dns, zone}` (what the filters compare).
        self.open("item")
            .leaf("instanceId", &i.id)
            .leaf("imageId", &i.image_id)
            .state("instanceState", i.state)
            .leaf("privateDnsName", &dns)
            .leaf("dnsName", "")
            .leaf("reason", &i.reason)
            .leaf("amiLaunchIndex", &i.launch_index.to_string())
            .open("productCodes")
            .close("productCodes")
            .leaf("instanceType", &i.instance_type)
            .leaf("launchTime", &iso8601(i.launch_unix_ms))
            .open("placement")
            .leaf("availabilityZone", &format!("{region}a"))
            .leaf("tenancy", "default")
            .close("placement")
            .open("monitoring")
            .leaf("state", "disabled")
            .close("monitoring")
            .leaf("privateIpAddress", ip)
            .open("groupSet")
            .close("groupSet")
            .leaf("architecture", "x86_64")
            .leaf("rootDeviceType", "ebs")
            .leaf("rootDeviceName", "/dev/xvda")
            .open("blockDeviceMapping")
            .close("blockDeviceMapping")
            .leaf("virtualizationType", "hvm")
            .leaf("clientToken", &i.client_token)
            .tag_set(&i.tags)
            .leaf("hypervisor", "xen")
            .open("metadataOptions")
            .leaf("state", "applied")
            .leaf("httpTokens", "required")
            .leaf("httpPutResponseHopLimit", "1")
            .leaf("httpEndpoint", "enabled")
            .close("metadataOptions")
            .close("item")
    }

    /// One `<item>` of an `imagesSet`.
    pub fn image(&mut self, i: &ImageRec) -> &mut Self {
        self.open("item")
            .leaf("imageId", &i.id)
            .leaf("imageLocation", &i.location)
            .leaf("imageState", &i.state)
            .leaf("imageOwnerId", OWNER)
            .leaf("creationDate", &iso8601(i.created_unix_ms))
            .leaf("isPublic", "false")
            .leaf("architecture", "x86_64")
            .leaf("imageType", "machine")
            .leaf("name", &i.name)
            .leaf("rootDeviceType", "ebs")
            .leaf("rootDeviceName", "/dev/xvda")
            .leaf("virtualizationType", "hvm")
            .leaf("hypervisor", "xen")
            .tag_set(&i.tags)
            .close("item")
    }
}

/// The AWS error document.
pub fn error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

/// `2026-11-22T07:00:00.000Z`.
pub fn iso8601(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nests() {
        let mut x = Xml::response("CreateTagsResponse", "r-1");
        x.leaf("return", "true").leaf("note", "a<b & \"c\"\u{1}");
        let s = x.finish();
        assert!(
            s.ends_with("<note>a&lt;b &amp; &quot;c&quot;</note></CreateTagsResponse>"),
            "{s}"
        );
        assert!(s.contains(NAMESPACE));
        assert!(error("X", "<y>", "1").contains("<Message>&lt;y&gt;</Message>"));
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    }
}
