// The demo's React page: one <JobPanel> per job, from appkit-jobs/react, in an AppKit-styled
// page. The demo server is not AppKit, so the jobs' client config comes from /config.json
// through <JobsProvider> (in an AppKit app, useJob reads it from the page as
// usePluginClientConfig("jobs") does). `?jobs=a,b` shows only those jobs.
import { useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import { JobPanel, JobsProvider } from "appkit-jobs/react";

// Databricks Apps forwards the signed-in person on every request (X-Forwarded-Email, ...); the
// demo has no such proxy, so the visitor names themselves and every request carries it.
const WHO_KEY = "appkit-jobs-demo-who";

function whoHeaders(who) {
  if (!who) return {};
  return who.includes("@")
    ? { "X-Forwarded-Email": who, "X-Forwarded-Preferred-Username": who.split("@")[0] }
    : { "X-Forwarded-Preferred-Username": who };
}

function App({ config, keys }) {
  const [who, setWho] = useState(() => localStorage.getItem(WHO_KEY) ?? "");
  const fetchAs = useMemo(() => (url, init = {}) => fetch(url, { ...init, headers: { ...whoHeaders(who.trim()), ...(init.headers ?? {}) } }), [who]);
  return (
    <JobsProvider config={config} fetch={fetchAs}>
      <div className="min-h-screen bg-background text-foreground">
        <header className="px-8 pt-6 pb-2">
          <h1 className="text-2xl font-semibold">appkit-jobs</h1>
          <p className="text-muted-foreground text-sm">
            The React components of <code>appkit-jobs/react</code> on appkit-ui ·{" "}
            <a className="underline" href="/">
              plain page
            </a>
          </p>
          <p id="mode" className="text-muted-foreground text-sm">
            {config.mode === "emulator" ? "Running against the bundled Jobs API emulator (sample jobs, simulated runs)." : `Running against the workspace ${config.host ?? ""}.`}
          </p>
          <p className="text-sm flex gap-2 items-center pt-2">
            <label htmlFor="who">You are</label>
            <input
              id="who"
              data-testid="who"
              className="border rounded px-2 py-0.5"
              placeholder="alice@example.com"
              autoComplete="off"
              defaultValue={who}
              onBlur={(e) => {
                localStorage.setItem(WHO_KEY, e.target.value.trim());
                setWho(e.target.value.trim());
              }}
            />
            <span className="text-muted-foreground">
              sent as <code>X-Forwarded-Email</code>, as Databricks Apps does: runs show who started them
            </span>
          </p>
        </header>
        <main className="grid gap-6 px-8 pb-8" style={{ gridTemplateColumns: "repeat(auto-fill, minmax(480px, 1fr))" }}>
          {keys.length === 0 ? <p>No jobs configured: set DATABRICKS_JOB_&lt;NAME&gt;=&lt;job id&gt;.</p> : null}
          {keys.map((key) => (
            <JobPanel key={key} jobKey={key} />
          ))}
        </main>
      </div>
    </JobsProvider>
  );
}

const root = createRoot(document.getElementById("root"));
try {
  const response = await fetch("/config.json");
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  const config = await response.json();
  const only = new URLSearchParams(location.search).get("jobs");
  const keys = Object.keys(config.jobs ?? {}).filter((k) => !only || only.split(",").includes(k));
  root.render(<App config={config} keys={keys} />);
} catch (err) {
  root.render(<p role="alert">Could not load the jobs configuration: {err.message}</p>);
}
