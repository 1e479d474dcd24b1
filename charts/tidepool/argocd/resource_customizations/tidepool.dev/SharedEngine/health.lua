-- Argo CD health check for tidepool.dev/InferenceDeployment (and, verbatim, SharedEngine).
--
-- Install: argocd-cm key resource.customizations.health.tidepool.dev_InferenceDeployment
-- (see argocd-cm.yaml), or build it into Argo CD from resource_customizations/. Written for
-- Lua 5.1 as Argo CD runs it (gopher-lua, 1 s budget, no open libraries needed): only tables,
-- strings, ipairs and comparisons.
--
-- Mapping, from the operator's status (metav1.Condition form):
--   metadata.deletionTimestamp set                                 -> Progressing (deleting)
--   no status, or status.observedGeneration < metadata.generation  -> Progressing
--   Ready=False with InvalidSpec, PoolNotFound, Unschedulable,
--     CrashLoopBackOff, ImagePullBackOff, OOMKilled,
--     CreateContainerConfigError or ReplicaFailure                  -> Degraded
--   Migrating=True (make-before-break move between GPU pools)      -> Progressing
--   Ready=True (ReplicasReady, or ScaledToZero on purpose)        -> Healthy
--   anything else (Ready=False WaitingForReplicas, Ready=Unknown)  -> Progressing
-- The operator writes the pod reasons on Ready only while no replica is ready, so a model that
-- still serves stays Healthy while one replica fails. The message comes from the Ready
-- condition (the Migrating one while a move runs).

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

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

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: the operator removes its engines, then its finalizer"
  return hs
end

if obj.status == nil then
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(obj.status.conditions, "Ready")
if ready == nil then
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Ready condition is from generation " .. tostring(ready.observedGeneration)
  return hs
end

local failed = {
  InvalidSpec = true,
  PoolNotFound = true,
  Unschedulable = true,
  CrashLoopBackOff = true,
  ImagePullBackOff = true,
  OOMKilled = true,
  CreateContainerConfigError = true,
  ReplicaFailure = true,
}
if ready.status == "False" and failed[ready.reason] then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. text(ready, "see kubectl describe")
  return hs
end

local migrating = find(obj.status.conditions, "Migrating")
if migrating ~= nil and migrating.status == "True" then
  hs.status = "Progressing"
  hs.message = "Migrating: " .. text(migrating, migrating.reason or "moving between GPU pools")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  if ready.reason == "ScaledToZero" then
    hs.message = text(ready, "Scaled to zero; wakes on the first request")
  else
    hs.message = text(ready, "Ready")
  end
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, ready.reason or "Waiting for replicas")
return hs
