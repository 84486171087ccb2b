// TENANT_ADMIN: the tenant's stages, allowed moves, stages needing a reason and event rules,
// saved as a whole with expectedVersion; the gateway's validation shown at the field concerned.
import { useState } from "preact/hooks";
import { type Problem, problem } from "./api";
import { useSession } from "./context";
import { when } from "./format";
import { Notice } from "./Notice";
import type { StageConfig } from "./types";

const SAVE = `mutation Configure($input: LifecycleStageConfigInput!) {
  configureLifecycleStages(input: $input) { id version stages requiredReasonCodes initialStage
    transitions { from to } eventRules { eventType toStage } updatedAt updatedBy }
}`;
const EVENT_TYPES = ["contract.renewed", "support.issue.opened", "support.issue.closed"];
const SECTIONS = ["stages", "initialStage", "requiredReasonCodes", "transitions", "eventRules"] as const;
type Section = (typeof SECTIONS)[number];

interface Draft {
  stages: string[];
  initialStage: string;
  required: string[];
  rules: Record<string, string[] | undefined>; // undefined: any move allowed from there
  events: { eventType: string; toStage: string }[];
}

const draftOf = (c: StageConfig): Draft => ({
  stages: [...c.stages],
  initialStage: c.initialStage,
  required: [...c.requiredReasonCodes],
  rules: Object.fromEntries(c.transitions.map((t) => [t.from, [...t.to]])),
  events: c.eventRules.map((r) => ({ ...r })),
});

/** Client-side checks, the same the gateway makes; the gateway has the last word. */
function check(d: Draft): Partial<Record<Section, string>> {
  const out: Partial<Record<Section, string>> = {};
  const names = d.stages.map((s) => s.trim());
  if (names.length === 0) out.stages = "At least one stage is required.";
  else if (names.some((n) => !n)) out.stages = "Stage names must not be empty.";
  else if (new Set(names).size !== names.length) out.stages = "Stage names must be unique.";
  if (!names.includes(d.initialStage)) out.initialStage = "Choose one of the stages.";
  if (d.events.some((e) => !names.includes(e.toStage))) out.eventRules = "Every rule needs a configured target stage.";
  const types = d.events.map((e) => e.eventType);
  if (new Set(types).size !== types.length) out.eventRules = "One rule per event type.";
  return out;
}

export function Admin() {
  const { gw, config, reloadConfig } = useSession();
  const [d, setD] = useState<Draft>(() => draftOf(config));
  const [base, setBase] = useState(config);
  const [errors, setErrors] = useState<Partial<Record<Section, string>>>({});
  const [failure, setFailure] = useState<Problem | null>(null);
  const [saved, setSaved] = useState<number | null>(null);
  const [sending, setSending] = useState(false);
  const up = (f: (x: Draft) => Draft) => {
    setSaved(null);
    setErrors({}); // shown until the next edit
    setD(f);
  };

  const rename = (i: number, name: string) =>
    up((x) => {
      const old = x.stages[i];
      const swap = (s: string) => (s === old ? name : s);
      const rules = Object.fromEntries(Object.entries(x.rules).map(([k, v]) => [swap(k), v?.map(swap)]));
      return {
        stages: x.stages.map((s, j) => (j === i ? name : s)),
        initialStage: swap(x.initialStage),
        required: x.required.map(swap),
        rules,
        events: x.events.map((e) => ({ ...e, toStage: swap(e.toStage) })),
      };
    });
  const remove = (i: number) =>
    up((x) => {
      const gone = x.stages[i];
      const rules = Object.fromEntries(
        Object.entries(x.rules)
          .filter(([k]) => k !== gone)
          .map(([k, v]) => [k, v?.filter((s) => s !== gone)]),
      );
      return {
        stages: x.stages.filter((_, j) => j !== i),
        initialStage: x.initialStage === gone ? x.stages.find((s) => s !== gone) || "" : x.initialStage,
        required: x.required.filter((s) => s !== gone),
        rules,
        events: x.events.filter((e) => e.toStage !== gone),
      };
    });
  const move = (i: number, by: number) =>
    up((x) => {
      const s = [...x.stages];
      const j = i + by;
      if (j < 0 || j >= s.length) return x;
      [s[i], s[j]] = [s[j], s[i]];
      return { ...x, stages: s };
    });

  const save = async (e: Event) => {
    e.preventDefault();
    setFailure(null);
    setSaved(null);
    const found = check(d);
    setErrors(found);
    if (Object.keys(found).length) return;
    setSending(true);
    const stages = d.stages.map((s) => s.trim());
    const input = {
      stages,
      initialStage: d.initialStage,
      requiredReasonCodes: stages.filter((s) => d.required.includes(s)),
      transitions: stages.filter((s) => d.rules[s]).map((s) => ({ from: s, to: d.rules[s]! })),
      eventRules: d.events,
      expectedVersion: base.version,
    };
    const r = await gw.client.mutation<{ configureLifecycleStages: StageConfig }>(SAVE, { input }).toPromise();
    setSending(false);
    const p = problem(r.error);
    if (p) {
      // The gateway names the field first ("transitions: ...", "Stages still hold customers...").
      const m = /^(stages|initialStage|requiredReasonCodes|transitions|eventRules)\b/i.exec(p.message);
      const section = m && SECTIONS.find((x) => x.toLowerCase() === m[1].toLowerCase());
      if (p.code !== "CONFLICT" && section) setErrors({ [section]: p.message });
      else if (p.code === "CONFLICT") setFailure({ ...p, message: "Someone else saved the configuration meanwhile. Reload it, then make your change again." });
      else setFailure(p);
      return;
    }
    const c = r.data!.configureLifecycleStages;
    setBase(c);
    setD(draftOf(c));
    setSaved(c.version);
    await reloadConfig();
  };

  const err = (s: Section) =>
    errors[s] && (
      <p class="field-error" id={`err-${s}`} role="alert">
        {errors[s]}
      </p>
    );
  const described = (s: Section) => (errors[s] ? `err-${s}` : undefined);

  return (
    <form class="admin" onSubmit={save} aria-labelledby="admin-h" noValidate>
      <h1 id="admin-h">Stage configuration</h1>
      <p class="muted">
        Version {base.version}
        {base.updatedAt && ` · saved ${when(base.updatedAt)} by ${base.updatedBy}`}
      </p>
      <Notice problem={failure} onRetry={failure?.code === "CONFLICT" ? () => void reloadConfig().then(() => location.reload()) : undefined} />

      <fieldset aria-describedby={described("stages")}>
        <legend>Stages, in order</legend>
        {err("stages")}
        <ol class="stages-edit">
          {d.stages.map((s, i) => (
            <li key={i}>
              <label class="sr-only" for={`stage-${i}`}>
                Stage {i + 1} name
              </label>
              <input id={`stage-${i}`} type="text" value={s} aria-invalid={errors.stages ? "true" : undefined} onInput={(e) => rename(i, e.currentTarget.value)} />
              <button type="button" class="small" onClick={() => move(i, -1)} disabled={i === 0} aria-label={`Move ${s} up`}>
                ↑
              </button>
              <button type="button" class="small" onClick={() => move(i, 1)} disabled={i === d.stages.length - 1} aria-label={`Move ${s} down`}>
                ↓
              </button>
              <button type="button" class="small" onClick={() => remove(i)} aria-label={`Remove ${s}`}>
                Remove
              </button>
            </li>
          ))}
        </ol>
        <button type="button" class="small" onClick={() => up((x) => ({ ...x, stages: [...x.stages, ""] }))}>
          Add a stage
        </button>
      </fieldset>

      <fieldset>
        <legend>New customers start in</legend>
        {err("initialStage")}
        <label class="sr-only" for="initial">
          Initial stage
        </label>
        <select id="initial" value={d.initialStage} aria-describedby={described("initialStage")} onChange={(e) => up((x) => ({ ...x, initialStage: e.currentTarget.value }))}>
          {d.stages.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </fieldset>

      <fieldset aria-describedby={described("requiredReasonCodes")}>
        <legend>Moving into these stages requires a reason</legend>
        {err("requiredReasonCodes")}
        <div class="checks">
          {d.stages.map((s) => (
            <label key={s}>
              <input
                type="checkbox"
                checked={d.required.includes(s)}
                onChange={(e) => {
                  const on = e.currentTarget.checked;
                  up((x) => ({ ...x, required: on ? [...x.required, s] : x.required.filter((r) => r !== s) }));
                }}
              />
              {s}
            </label>
          ))}
        </div>
      </fieldset>

      <fieldset aria-describedby={described("transitions")}>
        <legend>Allowed moves</legend>
        <p class="hint">A stage without a rule allows a move to any other stage.</p>
        {err("transitions")}
        <table class="rules">
          <thead>
            <tr>
              <th scope="col">From</th>
              <th scope="col">Restricted</th>
              <th scope="col">May move to</th>
            </tr>
          </thead>
          <tbody>
            {d.stages.map((from) => {
              const to = d.rules[from];
              return (
                <tr key={from} data-rule-from={from}>
                  <th scope="row">{from}</th>
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Restrict moves from ${from}`}
                      checked={!!to}
                      onChange={(e) => {
                        const on = e.currentTarget.checked;
                        up((x) => ({ ...x, rules: { ...x.rules, [from]: on ? x.stages.filter((s) => s !== from) : undefined } }));
                      }}
                    />
                  </td>
                  <td class="checks">
                    {to
                      ? d.stages
                          .filter((s) => s !== from)
                          .map((s) => (
                            <label key={s}>
                              <input
                                type="checkbox"
                                aria-label={`${from} may move to ${s}`}
                                checked={to.includes(s)}
                                onChange={(e) => {
                                  const on = e.currentTarget.checked;
                                  up((x) => ({
                                    ...x,
                                    rules: { ...x.rules, [from]: on ? [...(x.rules[from] || []), s] : (x.rules[from] || []).filter((t) => t !== s) },
                                  }));
                                }}
                              />
                              {s}
                            </label>
                          ))
                      : <span class="muted">any stage</span>}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </fieldset>

      <fieldset aria-describedby={described("eventRules")}>
        <legend>Event rules</legend>
        <p class="hint">An event of this type moves the customer to the stage (within the allowed moves).</p>
        {err("eventRules")}
        {d.events.map((r, i) => (
          <div class="event-rule" key={i}>
            <label>
              Event
              <select value={r.eventType} onChange={(e) => up((x) => ({ ...x, events: x.events.map((y, j) => (j === i ? { ...y, eventType: e.currentTarget.value } : y)) }))}>
                {EVENT_TYPES.map((t) => (
                  <option key={t}>{t}</option>
                ))}
              </select>
            </label>
            <label>
              moves to
              <select value={r.toStage} onChange={(e) => up((x) => ({ ...x, events: x.events.map((y, j) => (j === i ? { ...y, toStage: e.currentTarget.value } : y)) }))}>
                <option value="">Choose…</option>
                {d.stages.map((s) => (
                  <option key={s}>{s}</option>
                ))}
              </select>
            </label>
            <button type="button" class="small" onClick={() => up((x) => ({ ...x, events: x.events.filter((_, j) => j !== i) }))} aria-label={`Remove the ${r.eventType} rule`}>
              Remove
            </button>
          </div>
        ))}
        <button type="button" class="small" onClick={() => up((x) => ({ ...x, events: [...x.events, { eventType: EVENT_TYPES.find((t) => !x.events.some((e) => e.eventType === t)) || EVENT_TYPES[0], toStage: "" }] }))}>
          Add an event rule
        </button>
      </fieldset>

      <div class="actions">
        <button type="submit" disabled={sending}>
          {sending ? "Saving…" : "Save configuration"}
        </button>
        <button type="button" class="link" onClick={() => { setD(draftOf(base)); setErrors({}); }}>
          Discard changes
        </button>
        {saved !== null && (
          <span class="notice ok" role="status">
            Saved as version {saved}.
          </span>
        )}
      </div>
    </form>
  );
}
