-- indb_average_update.lua -- the Lua/JSON baseline of `spirt bench indb`.
--
-- What SPIRT's public code does for a round's average-and-step, written anew
-- for the benchmark: every gradient and the parameters are JSON lists of
-- numbers in plain string keys; one EVAL decodes them with cjson, averages
-- the B gradients, takes an SGD step and stores the parameters back as JSON.
--
-- KEYS[1..B]  the gradients (JSON lists of equal length)
-- KEYS[B+1]   the parameters (JSON list)
-- ARGV[1]     the learning rate
-- Returns the number of parameters.
local batches = #KEYS - 1
local learning_rate = tonumber(ARGV[1])
local params = cjson.decode(redis.call('GET', KEYS[batches + 1]))
local count = #params
local sum = {}
for i = 1, count do sum[i] = 0 end
for b = 1, batches do
  local grad = cjson.decode(redis.call('GET', KEYS[b]))
  if #grad ~= count then
    return redis.error_reply('gradient ' .. KEYS[b] .. ' has ' .. #grad .. ' values, params ' .. count)
  end
  for i = 1, count do sum[i] = sum[i] + grad[i] end
end
for i = 1, count do params[i] = params[i] - learning_rate * (sum[i] / batches) end
redis.call('SET', KEYS[batches + 1], cjson.encode(params))
return count
