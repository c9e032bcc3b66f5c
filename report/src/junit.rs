//! JUnit XML for `report gate --junit FILE`: one `<testcase>` per gate per cell, a
//! `<failure>` for every failing verdict, the explanation in `<system-out>` otherwise.

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::gate::GateResult;

/// The JUnit document for gate results.
pub fn junit_xml(suite: &str, results: &[GateResult]) -> String {
    let failures = results.iter().filter(|r| r.verdict.fails()).count();
    let tests = results.len().to_string();
    let failures = failures.to_string();
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail.
    let _ = (|| -> std::io::Result<()> {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.create_element("testsuites")
            .with_attribute(("name", "report gate"))
            .with_attribute(("tests", tests.as_str()))
            .with_attribute(("failures", failures.as_str()))
            .write_inner_content(|w| {
                w.create_element("testsuite")
                    .with_attribute(("name", suite))
                    .with_attribute(("tests", tests.as_str()))
                    .with_attribute(("failures", failures.as_str()))
                    .with_attribute(("errors", "0"))
                    .with_attribute(("skipped", "0"))
                    .write_inner_content(|w| {
                        for r in results {
                            let name = format!("{} [{}]", r.gate, r.cell);
                            let el = w
                                .create_element("testcase")
                                .with_attribute(("classname", r.cell.as_str()))
                                .with_attribute(("name", name.as_str()))
                                .with_attribute(("time", "0"));
                            if r.verdict.fails() {
                                let msg = format!("{}: {}", r.verdict.name(), r.explanation);
                                el.write_inner_content(|w| {
                                    w.create_element("failure")
                                        .with_attribute(("message", msg.as_str()))
                                        .with_attribute(("type", r.verdict.name()))
                                        .write_text_content(BytesText::new(&msg))?;
                                    Ok(())
                                })?;
                            } else {
                                let msg = format!("{}: {}", r.verdict.name(), r.explanation);
                                el.write_inner_content(|w| {
                                    w.create_element("system-out")
                                        .write_text_content(BytesText::new(&msg))?;
                                    Ok(())
                                })?;
                            }
                        }
                        Ok(())
                    })?;
                Ok(())
            })?;
        Ok(())
    })();
    let mut s = String::from_utf8_lossy(&w.into_inner()).into_owned();
    s.push('\n');
    s
}
