// The demo's React page: one <JobPanel> per job, from appkit-jobs/react, in an AppKit-styled
// page. The demo server is not AppKit, so the jobs' client config comes from /config.json
// through <JobsProvider> (in an AppKit app, useJob reads it from the page as
// usePluginClientConfig("jobs") does). `?jobs=a,b` shows only those jobs.
import { createRoot } from "react-dom/client";
import { JobPanel, JobsProvider } from "appkit-jobs/react";

function App({ config, keys }) {
  return (
    <JobsProvider config={config}>
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
