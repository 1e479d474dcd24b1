-- Argo CD health check for tidepool.dev/GPUPool (cluster-scoped; Lua 5.1 as Argo CD runs it).
--
-- Install: argocd-cm key resource.customizations.health.tidepool.dev_GPUPool (argocd-cm.yaml).
--
-- The operator counts, every 30 s, the nodes matching the pool's nodeSelector and their
-- allocatable nvidia.com/gpu (status.nodes, status.gpusAllocatable, status.observedGeneration).
--   metadata.deletionTimestamp set                                   -> Progressing (deleting)
--   no status.observedGeneration, or older than metadata.generation  -> Progressing
--   nodes match but none advertises a GPU                            -> Degraded (the NVIDIA
--                                                                       device plugin is not
--                                                                       running on them)
--   no node matches                                                  -> Healthy (autoscaled
--                                                                       node groups start empty)
--   otherwise                                                        -> Healthy

local hs = { status = "Progressing", message = "Waiting for the operator to count the pool's nodes" }

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: the operator stops watching the pool, then removes its finalizer"
  return hs
end

if obj.status == nil or obj.status.observedGeneration == nil then
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local nodes = obj.status.nodes or 0
local gpus = obj.status.gpusAllocatable or 0
if nodes > 0 and gpus == 0 then
  hs.status = "Degraded"
  hs.message = tostring(nodes) .. " node(s) match but none advertises nvidia.com/gpu: is the NVIDIA device plugin running there?"
  return hs
end

hs.status = "Healthy"
if nodes == 0 then
  hs.message = "No node matches the nodeSelector yet (an autoscaled node group may start empty)"
else
  hs.message = tostring(nodes) .. " node(s), " .. tostring(gpus) .. " GPU(s) allocatable"
end
return hs
