//! The MCP server at `/mcp` with the official MCP Python SDK as its client, over streamable
//! HTTP, on a server that requires keys: two tenants, a write and a read key for one of them.

use crate::server::{ok_json, TestServer};
use crate::service_api::create_key;

#[test]
fn the_official_mcp_client_searches_reads_and_asks_within_its_keys_reach() {
    crate::common::python_envs();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (writer, reader, globex) = (
        create_key(&data, "acme", "write"),
        create_key(&data, "acme", "read"),
        create_key(&data, "globex", "write"),
    );
    let server = TestServer::start(&data, &[]);
    let acme = server.with_key(Some(&writer));
    acme.create_kb("handbook");
    let receipt = ok_json(
        acme.upload(
            "handbook",
            &[
                (
                    "keys.md",
                    b"# Keys\n\nAPI keys are created with `groundwork keys create --tenant acme`. \
                  Each key has scopes: read, infer, write or admin."
                        .to_vec(),
                ),
                (
                    "tower.md",
                    b"# Tower\n\nThe Eiffel Tower was completed in 1889 for the World's Fair."
                        .to_vec(),
                ),
            ],
            None,
        ),
    );
    acme.wait_job(receipt["job_id"].as_str().expect("job"));
    let other = server.with_key(Some(&globex));
    other.create_kb("secret-plans");
    let receipt = ok_json(other.upload(
        "secret-plans",
        &[(
            "plans.md",
            b"# Plans\n\nThe launch is planned for May.".to_vec(),
        )],
        None,
    ));
    other.wait_job(receipt["job_id"].as_str().expect("job"));
    crate::common::python_checks(
        ".venv-test",
        "mcp_client.py",
        &[],
        &[
            ("GROUNDWORK_URL", &server.url),
            ("ACME_WRITE_KEY", &writer),
            ("ACME_READ_KEY", &reader),
            ("GLOBEX_KEY", &globex),
        ],
    );
    server.stop();
}
