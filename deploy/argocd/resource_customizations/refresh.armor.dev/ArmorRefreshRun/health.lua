-- Argo CD health of an ArmorRefreshRun (refresh.armor.dev), from the status the operator writes.
local hs = { status = "Progressing", message = "Waiting for the operator to pick up the run" }
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local st = obj.status
if obj.metadata.generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local progress = ""
if st.progress ~= nil and st.progress.summary ~= nil then
  progress = " (" .. st.progress.summary .. " refreshed)"
end
local message = (st.message or st.phase) .. progress
if st.reason == "PolicyInvalid" or st.reason == "CircuitOpen" then
  -- A human must act: fix the policy, or fix the cause and set a new resumeToken.
  hs.status = "Degraded"
elseif st.phase == "Completed" then
  hs.status = "Healthy"
elseif st.phase == "Failed" then
  hs.status = "Degraded"
elseif st.phase == "Paused" then
  -- A pause or a closed window is by design.
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
