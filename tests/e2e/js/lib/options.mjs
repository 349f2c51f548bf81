/** The JSON object passed as a script's only argument (tests/e2e/conftest.py: run_node). */
export function options() {
  return JSON.parse(process.argv[2] || "{}");
}
