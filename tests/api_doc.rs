//! The README's problem-type table and exit-code table against the code, so neither can
//! drift: every problem type with its status and whether it is served today, every exit
//! code the client maps.

use zerokeeper::api::ProblemKind;
use zerokeeper::cli::client::Exit;

const README: &str = include_str!("../README.md");

/// The rows of the markdown table whose header line is `header`, split into cells.
fn table(header: &str) -> Vec<Vec<String>> {
    let start = README
        .find(header)
        .unwrap_or_else(|| panic!("no table {header:?} in README.md"));
    README[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The names in backticks in a cell.
fn names(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_readme_lists_every_problem_type_with_its_status_and_whether_it_is_served() {
    let mut listed = Vec::new();
    for row in table("| problem type | status | when | today |") {
        let status: u16 = row[1]
            .parse()
            .unwrap_or_else(|_| panic!("status in {row:?}"));
        let today = match row[3].as_str() {
            "yes" => true,
            "to come" => false,
            other => panic!("today is {other:?} in {row:?}"),
        };
        for name in names(&row[0]) {
            let kind = ProblemKind::ALL
                .iter()
                .find(|k| k.name() == name)
                .unwrap_or_else(|| panic!("README names {name}, which the code does not have"));
            assert_eq!(kind.status(), status, "{name}");
            assert_eq!(kind.served(), today, "{name}");
            listed.push(*kind);
        }
    }
    for kind in ProblemKind::ALL {
        assert!(
            listed.contains(kind),
            "README does not list {}",
            kind.name()
        );
    }
}

#[test]
fn the_readme_lists_every_exit_code_and_maps_each_problem_type_to_its_own() {
    let rows = table("| code | meaning | problem types | today |");
    let codes: Vec<u8> = rows
        .iter()
        .map(|r| r[0].parse().unwrap_or_else(|_| panic!("code in {r:?}")))
        .collect();
    let mut want: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
    want.push(2); // clap's usage errors
    want.sort_unstable();
    assert_eq!(codes, want);
    for row in &rows {
        let code: u8 = row[0].parse().expect("a code");
        for name in names(&row[2]) {
            let kind = ProblemKind::ALL
                .iter()
                .find(|k| k.name() == name)
                .unwrap_or_else(|| panic!("README names {name}, which the code does not have"));
            let exit = Exit::for_problem(kind.status(), &kind.type_uri());
            assert_eq!(exit.code(), code, "{name}");
        }
    }
}
