defmodule Symbiont.Host.Credit do
  @moduledoc false
  # Flow control of the frames a host sends on its own (PROTOCOL.md §8.2): the publishes
  # of each slot's agent, and the casts and messages of the host itself (slot 0). A host
  # has at most a window of them (frames, and bytes) that the owner has not given back
  # with a `credit` frame; the owner gives them back as it has handled them, so a host
  # that sends faster than the node absorbs waits, instead of the node's memory growing.
  #
  # The owner (Symbiont.Host) counts what it received and refuses a host past its window
  # (a protocol error: the Python host never gets there); what to give back is counted
  # where the frames are handled, and given back a quarter window at a time: the agent
  # server of the slot for publishes, the owner itself for casts (once they have run)
  # and messages (once sent). A host has room while it is under its window, so what
  # stays below a quarter never holds it back.

  @frames 1024
  @bytes 4 * 1024 * 1024

  @typedoc "Per slot (0: the host's casts and messages), frames and bytes not given back."
  @type counts :: %{non_neg_integer => {non_neg_integer, non_neg_integer}}

  @doc "The window the owner gives each slot (and the host itself) in `agent_start` (`init`)."
  @spec window() :: %{String.t() => pos_integer}
  def window, do: %{"frames" => @frames, "bytes" => @bytes}

  @doc "What a publish costs of its window's bytes: its topic and payload (§8.2)."
  @spec publish_cost(binary, binary) :: non_neg_integer
  def publish_cost(topic, payload), do: byte_size(topic) + byte_size(payload)

  @doc """
  Counts a frame of `slot` that costs `cost` bytes; `{:error, reason}` when the window was
  full before it: a host sends only while what it was not given back is under the
  window, in frames and in bytes (so the last one may take the bytes past it).
  """
  @spec charge(counts, non_neg_integer, non_neg_integer) :: {:ok, counts} | {:error, term}
  def charge(counts, slot, cost) do
    {frames, bytes} = Map.get(counts, slot, {0, 0})

    if frames >= @frames or bytes >= @bytes,
      do: {:error, {:window, slot, frames, bytes}},
      else: {:ok, Map.put(counts, slot, {frames + 1, bytes + cost})}
  end

  @doc "Takes `frames` and `bytes` given back off `slot`'s count (a slot it has no count for: nothing)."
  @spec give_back(counts, non_neg_integer, non_neg_integer, non_neg_integer) :: counts
  def give_back(counts, slot, frames, bytes) do
    case counts do
      %{^slot => {f, b}} -> Map.put(counts, slot, {max(f - frames, 0), max(b - bytes, 0)})
      _ -> counts
    end
  end

  @doc """
  Whether handled frames and bytes make a batch to give back: a quarter window. What is
  left below that never holds a host back: it has room while it is under the window.
  """
  @spec due?(non_neg_integer, non_neg_integer) :: boolean
  def due?(frames, bytes), do: frames * 4 >= @frames or bytes * 4 >= @bytes

  @doc "The reason of a host past its window, for the protocol error (§9)."
  @spec format_error({:window, non_neg_integer, pos_integer, pos_integer}) :: String.t()
  def format_error({:window, slot, frames, bytes}) do
    what = if slot == 0, do: "casts and messages", else: "publishes of slot #{slot}"

    "one more of its #{what} while #{frames} (#{bytes} bytes) were not given back, a full window of #{@frames} frames or #{@bytes} bytes (§8.2)"
  end
end
