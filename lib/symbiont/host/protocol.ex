defmodule Symbiont.Host.Protocol do
  @moduledoc false
  # Frames of docs/PROTOCOL.md, version 2: decoding with validation of kind, arity and
  # field types (§9), and encoding of the frames the owner sends.

  alias Symbiont.MsgPack

  @version 2

  defguardp is_id(x) when is_integer(x) and x >= 0
  defguardp is_seq(x) when is_integer(x) and x > 0
  @int64 0x8000000000000000
  @levels %{"debug" => :debug, "info" => :info, "warning" => :warning, "error" => :error}
  @level_names "debug, info, warning, error"
  @kinds ~w(reply error log call cast msg cancel ack nack publish ready fatal agent_ready
            agent_failed pong)

  @type frame ::
          {:ready, non_neg_integer, map}
          | {:fatal, map}
          | {:reply, non_neg_integer, term}
          | {:error, non_neg_integer, map}
          | {:call, non_neg_integer, binary, binary, list}
          | {:cast, binary, binary, list}
          | {:msg, term, term}
          | {:cancel, non_neg_integer}
          | {:log, Logger.level(), binary}
          | {:agent_ready, pos_integer, map}
          | {:agent_failed, pos_integer, map}
          | {:ack, pos_integer, pos_integer, binary | nil}
          | {:nack, pos_integer, pos_integer, map}
          | {:publish, pos_integer, binary, binary, {non_neg_integer, integer} | nil}
          | {:pong, non_neg_integer}

  @spec version() :: pos_integer
  def version, do: @version

  @doc "Decodes and validates one frame payload received from a host."
  @spec decode(binary) :: {:ok, frame} | {:error, term}
  def decode(payload) do
    case MsgPack.decode(payload) do
      {:ok, [kind | fields]} when is_binary(kind) -> validate(kind, fields)
      {:ok, other} -> {:error, {:not_a_frame, summarize(other)}}
      {:error, reason} -> {:error, {:undecodable, reason}}
    end
  end

  defp validate("reply", [id, value]) when is_id(id), do: {:ok, {:reply, id, value}}

  defp validate("error", [id, err]) when is_id(id),
    do: with(:ok <- error_map("error", err), do: {:ok, {:error, id, err}})

  defp validate("log", [level, msg]) when is_binary(msg), do: log_level(level, msg)

  defp validate("call", [id, m, f, args])
       when is_id(id) and is_binary(m) and is_binary(f) and is_list(args),
       do: {:ok, {:call, id, m, f, args}}

  defp validate("cast", [m, f, args]) when is_binary(m) and is_binary(f) and is_list(args),
    do: {:ok, {:cast, m, f, args}}

  defp validate("msg", [dest, value]), do: {:ok, {:msg, dest, value}}
  defp validate("cancel", [id]) when is_id(id), do: {:ok, {:cancel, id}}
  defp validate("pong", [beat]) when is_id(beat), do: {:ok, {:pong, beat}}

  defp validate("agent_ready", [slot, info]) when is_seq(slot),
    do: with(:ok <- agent_info(info), do: {:ok, {:agent_ready, slot, info}})

  defp validate("agent_failed", [slot, err]) when is_seq(slot),
    do: with(:ok <- error_map("agent_failed", err), do: {:ok, {:agent_failed, slot, err}})

  defp validate("ack", [slot, seq, state])
       when is_seq(slot) and is_seq(seq) and (is_binary(state) or is_nil(state)),
       do: {:ok, {:ack, slot, seq, state}}

  defp validate("nack", [slot, seq, err]) when is_seq(slot) and is_seq(seq),
    do: with(:ok <- error_map("nack", err), do: {:ok, {:nack, slot, seq, err}})

  # §8.1: the seq and n of the publish's id; a host may leave both out (no id).
  defp validate("publish", [slot, topic, payload, seq, n])
       when is_seq(slot) and is_binary(topic) and is_binary(payload) and is_id(seq) and
              is_integer(n) and n >= -@int64 and n < @int64,
       do: {:ok, {:publish, slot, topic, payload, {seq, n}}}

  defp validate("publish", [slot, topic, payload])
       when is_seq(slot) and is_binary(topic) and is_binary(payload),
       do: {:ok, {:publish, slot, topic, payload, nil}}

  defp validate("ready", [v, info]) when is_integer(v),
    do: with(:ok <- ready_info(info), do: {:ok, {:ready, v, info}})

  defp validate("fatal", [err]),
    do: with(:ok <- error_map("fatal", err), do: {:ok, {:fatal, err}})

  defp validate(kind, fields) when kind in @kinds,
    do: {:error, {:bad_frame, kind, summarize(fields)}}

  defp validate(kind, _fields), do: {:error, {:unknown_kind, kind}}

  defp log_level(level, msg) do
    case @levels do
      %{^level => l} ->
        {:ok, {:log, l, msg}}

      _ ->
        {:error, {:bad_frame, "log", "level #{summarize(level)} is not one of #{@level_names}"}}
    end
  end

  # The maps the owner reads fields of are checked here, so that handling a frame that
  # passed never fails on a field's type (§3, §5, §8).
  defp error_map(_kind, %{"type" => t, "message" => m, "traceback" => tb})
       when is_binary(t) and is_binary(m) and is_binary(tb),
       do: :ok

  defp error_map(kind, err) do
    {:error,
     {:bad_frame, kind,
      "an error must be a map with \"type\", \"message\" and \"traceback\" strings (§5), got: #{summarize(err)}"}}
  end

  defp ready_info(%{"protocol" => p, "pid" => pid, "runtime" => rt, "max_frame" => max})
       when is_integer(p) and is_integer(pid) and pid > 0 and is_binary(rt) and
              is_integer(max) and max >= 64,
       do: :ok

  defp ready_info(info) do
    {:error,
     {:bad_frame, "ready",
      "info must be a map with \"protocol\" (int), \"pid\" (positive int), \"runtime\" (str) and \"max_frame\" (int >= 64) (§3), got: #{summarize(info)}"}}
  end

  defp agent_info(%{"name" => name, "topics" => topics, "timers" => timers})
       when is_binary(name) and is_list(topics) and is_list(timers) do
    cond do
      not Enum.all?(topics, &(is_binary(&1) and &1 != "")) ->
        {:error,
         {:bad_frame, "agent_ready",
          "\"topics\" must be non-empty strings, got: #{summarize(topics)}"}}

      not Enum.all?(timers, &timer?/1) ->
        {:error,
         {:bad_frame, "agent_ready",
          "\"timers\" must be maps of \"name\" (str) and \"every_ms\" (positive int), got: #{summarize(timers)}"}}

      true ->
        :ok
    end
  end

  defp agent_info(info) do
    {:error,
     {:bad_frame, "agent_ready",
      "info must be a map with \"name\" (str), \"topics\" and \"timers\" (lists) (§8), got: #{summarize(info)}"}}
  end

  defp timer?(%{"name" => name, "every_ms" => ms}),
    do: is_binary(name) and is_integer(ms) and ms > 0

  defp timer?(_), do: false

  # Keeps error messages short when a hostile frame is large.
  defp summarize(term), do: inspect(term, limit: 8, printable_limit: 64)

  @doc "Encodes a frame (a list led by its kind) to iodata."
  @spec encode(list) :: iodata
  def encode(frame), do: MsgPack.encode!(frame)

  @doc "A human-readable reason, for logs and crash reports."
  @spec format_error(term) :: String.t()
  def format_error({:unknown_kind, kind}), do: "unknown frame kind #{inspect(kind)}"
  def format_error({:bad_frame, kind, fields}), do: "bad #{inspect(kind)} frame: #{fields}"
  def format_error({:not_a_frame, what}), do: "payload is not an array led by a kind: #{what}"

  def format_error({:undecodable, reason}),
    do: "payload is not valid msgpack: #{MsgPack.format_error(reason)}"

  def format_error({:oversize, size, max}),
    do: "frame of #{size} bytes exceeds the limit of #{max}"

  def format_error({:before_ready, kind}), do: ~s("#{kind}" frame before "ready")
  def format_error({:after_ready, kind}), do: ~s(a second "#{kind}" frame, after "ready")

  def format_error({:version, theirs}),
    do: "protocol version #{inspect(theirs)}, expected #{@version}"

  def format_error(other), do: inspect(other)
end
