-- Argo CD health check for voicefleet.io VoiceAgent and ProviderPolicy (Lua 5.1, as Argo CD runs it).
-- Healthy: Ready=True for the current generation. Progressing: the operator has not caught up with the spec yet,
-- or a rollout/scale-up is under way. Degraded: a Degraded or ProviderDegraded condition is True (except "no ready
-- pods" while a rollout is still progressing), or Ready=False with nothing in progress.
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the voicefleet operator to report status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end

local conditions = status.conditions
local ready = find(conditions, "Ready")
local progressing = find(conditions, "Progressing")
local rolling = progressing ~= nil and progressing.status == "True"

if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready describes generation " .. ready.observedGeneration .. ", not " .. generation
  return hs
end

for _, kind in ipairs({ "Degraded", "ProviderDegraded" }) do
  local c = find(conditions, kind)
  if c ~= nil and c.status == "True" and not (rolling and c.reason == "NoReadyReplicas") then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if rolling then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
