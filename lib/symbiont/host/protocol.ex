defmodule Symbiont.Host.Protocol do
  @moduledoc false
  # Frames of docs/PROTOCOL.md, version 2: decoding with validation of kind, arity and
  # field types (§9), and encoding of the frames the owner sends.

  alias Symbiont.MsgPack

  @version 2

  # PROTOCOL.md §9: every integer a host sends is bounded. Ids, seqs, slots and counts
  # fit in 63 bits (0..2^63-1), `n` of a publish in 64 (-2^63..2^63-1), a frame size in
  # the 32 bits of a length prefix, a timer period in what a BEAM timer takes.
  @int64 0x8000000000000000
  @max_int @int64 - 1
  @max_u32 0xFFFFFFFF
  defguardp is_id(x) when is_integer(x) and x >= 0 and x <= @max_int
  defguardp is_seq(x) when is_integer(x) and x > 0 and x <= @max_int
  @levels %{"debug" => :debug, "info" => :info, "warning" => :warning, "error" => :error}
  @level_names "debug, info, warning, error"
  @kinds ~w(reply error log call cast msg cancel ack nack publish health ready fatal
            agent_ready agent_failed pong)

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
          | {:log, Logger.level(), binary, map}
          | {:agent_ready, pos_integer, map}
          | {:agent_failed, pos_integer, map}
          | {:ack, pos_integer, pos_integer, binary | nil}
          | {:nack, pos_integer, pos_integer, map}
          | {:publish, pos_integer, binary, binary, {non_neg_integer, integer} | nil}
          | {:health, pos_integer, binary, binary, map}
          | {:pong, non_neg_integer}
          | {:pong, non_neg_integer, %{pos_integer => non_neg_integer}}

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

  # §7: a logging record's fields, bounded.
  defp validate("log", [level, msg, fields]) when is_binary(msg) do
    with {:ok, {:log, l, msg}} <- log_level(level, msg),
         :ok <- log_fields(fields),
         do: {:ok, {:log, l, msg, fields}}
  end

  defp validate("call", [id, m, f, args])
       when is_id(id) and is_binary(m) and is_binary(f) and is_list(args),
       do: {:ok, {:call, id, m, f, args}}

  defp validate("cast", [m, f, args]) when is_binary(m) and is_binary(f) and is_list(args),
    do: {:ok, {:cast, m, f, args}}

  defp validate("msg", [dest, value]), do: {:ok, {:msg, dest, value}}
  defp validate("cancel", [id]) when is_id(id), do: {:ok, {:cancel, id}}
  defp validate("pong", [beat]) when is_id(beat), do: {:ok, {:pong, beat}}

  # §11.2: the busy time of each slot since the last pong, for an owner that asked.
  defp validate("pong", [beat, busy]) when is_id(beat) and is_map(busy) and not is_struct(busy) do
    case Enum.find(busy, fn {slot, us} -> not (is_seq(slot) and is_id(us)) end) do
      nil ->
        {:ok, {:pong, beat, busy}}

      {slot, us} ->
        {:error,
         {:bad_frame, "pong",
          "busy must map slots (int in 1..2^63-1) to microseconds (int in 0..2^63-1) (§11.2), got: #{summarize(slot)} => #{summarize(us)}"}}
    end
  end

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

  # §8.3: an agent's report about itself, within Symbiont.Health's bounds.
  defp validate("health", [slot, kind, reason, metrics]) when is_seq(slot) do
    case Symbiont.Health.check_report(kind, reason, metrics) do
      :ok -> {:ok, {:health, slot, kind, reason, metrics}}
      {:error, why} -> {:error, {:bad_frame, "health", Exception.message(why) <> " (§8.3)"}}
    end
  end

  defp validate("ready", [v, info]) when is_id(v),
    do: with(:ok <- ready_info(info), do: {:ok, {:ready, v, info}})

  defp validate("fatal", [err]),
    do: with(:ok <- error_map("fatal", err), do: {:ok, {:fatal, err}})

  defp validate(kind, fields) when kind in @kinds,
    do: {:error, {:bad_frame, kind, out_of_range(kind, fields) || summarize(fields)}}

  defp validate(kind, _fields), do: {:error, {:unknown_kind, kind}}

  # The integer fields of each kind, by position, with their range: a frame refused by
  # the guards above for an integer out of its range says which one.
  @int_fields %{
    "reply" => [{0, "id", 0, @max_int}],
    "error" => [{0, "id", 0, @max_int}],
    "call" => [{0, "id", 0, @max_int}],
    "cancel" => [{0, "id", 0, @max_int}],
    "pong" => [{0, "n", 0, @max_int}],
    "agent_ready" => [{0, "slot", 1, @max_int}],
    "agent_failed" => [{0, "slot", 1, @max_int}],
    "ack" => [{0, "slot", 1, @max_int}, {1, "seq", 1, @max_int}],
    "nack" => [{0, "slot", 1, @max_int}, {1, "seq", 1, @max_int}],
    "publish" => [{0, "slot", 1, @max_int}, {3, "seq", 0, @max_int}, {4, "n", -@int64, @max_int}],
    "health" => [{0, "slot", 1, @max_int}],
    "ready" => [{0, "version", 0, @max_int}]
  }

  defp out_of_range(kind, fields) do
    Enum.find_value(Map.get(@int_fields, kind, []), fn {at, name, min, max} ->
      case Enum.at(fields, at) do
        x when is_integer(x) and (x < min or x > max) -> range_error(name, x, min, max)
        _ -> nil
      end
    end)
  end

  defp range_error(name, x, min, max),
    do: "#{name} #{x} is out of range: expected an integer in #{bound(min)}..#{bound(max)} (§9)"

  defp bound(@max_int), do: "2^63-1"
  defp bound(-@int64), do: "-2^63"
  defp bound(@max_u32), do: "2^32-1"
  defp bound(n), do: Integer.to_string(n)

  defp log_level(level, msg) do
    case @levels do
      %{^level => l} ->
        {:ok, {:log, l, msg}}

      _ ->
        {:error, {:bad_frame, "log", "level #{summarize(level)} is not one of #{@level_names}"}}
    end
  end

  @max_logger 256
  @max_level_name 32
  @max_extra 16
  @max_extra_name 64
  @max_extra_text 256

  @doc """
  The bounds of a log frame's fields (PROTOCOL.md §7), for the docs and the host's tests:
  the logger's name and the level name in bytes, the `extra` fields, the bytes of an
  extra field's name and of a string value.
  """
  @spec log_field_bounds() :: map
  def log_field_bounds,
    do: %{
      logger: @max_logger,
      level: @max_level_name,
      extra: @max_extra,
      extra_name: @max_extra_name,
      extra_text: @max_extra_text
    }

  defp log_fields(%{} = fields) when not is_struct(fields) do
    extra = Map.get(fields, "extra", %{})

    cond do
      not text?(Map.get(fields, "logger", ""), @max_logger) ->
        bad_fields("\"logger\" must be a string of at most #{@max_logger} bytes", fields)

      not text?(Map.get(fields, "level", ""), @max_level_name) ->
        bad_fields("\"level\" must be a string of at most #{@max_level_name} bytes", fields)

      not (is_map(extra) and not is_struct(extra) and map_size(extra) <= @max_extra and
               Enum.all?(extra, &extra_field?/1)) ->
        bad_fields(
          "\"extra\" must be a map of at most #{@max_extra} fields, named by strings of at " <>
            "most #{@max_extra_name} bytes, each nil, a boolean, a number or a string of at " <>
            "most #{@max_extra_text} bytes",
          fields
        )

      true ->
        :ok
    end
  end

  defp log_fields(fields), do: bad_fields("fields must be a map", fields)

  defp bad_fields(rule, fields),
    do: {:error, {:bad_frame, "log", "#{rule} (§7), got: #{summarize(fields)}"}}

  defp text?(value, most), do: is_binary(value) and byte_size(value) <= most

  defp extra_field?({name, value}) when is_binary(name) and byte_size(name) <= @max_extra_name,
    do:
      is_nil(value) or is_boolean(value) or is_number(value) or
        (is_binary(value) and byte_size(value) <= @max_extra_text)

  defp extra_field?(_), do: false

  @doc """
  What a log frame's fields count in the output limit's bytes (§7): the bytes of the
  logger's name, of the level name, and of each extra field's name and value (8 for a
  value that is not a string). The host counts the same.
  """
  @spec fields_cost(map) :: non_neg_integer
  def fields_cost(fields) do
    named =
      for key <- ["logger", "level"], is_binary(v = Map.get(fields, key)), reduce: 0 do
        acc -> acc + byte_size(v)
      end

    for {k, v} <- Map.get(fields, "extra", %{}), reduce: named do
      acc -> acc + byte_size(k) + if(is_binary(v), do: byte_size(v), else: 8)
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
       when is_id(p) and is_seq(pid) and is_binary(rt) and is_integer(max) and max >= 64 and
              max <= @max_u32,
       do: :ok

  defp ready_info(info) do
    {:error,
     {:bad_frame, "ready",
      "info must be a map with \"protocol\" (int in 0..2^63-1), \"pid\" (int in 1..2^63-1), \"runtime\" (str) and \"max_frame\" (int in 64..2^32-1) (§3, §9), got: #{summarize(info)}"}}
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
          "\"timers\" must be maps of \"name\" (str) and \"every_ms\" (int in 1..2^32-1), got: #{summarize(timers)}"}}

      true ->
        :ok
    end
  end

  defp agent_info(info) do
    {:error,
     {:bad_frame, "agent_ready",
      "info must be a map with \"name\" (str), \"topics\" and \"timers\" (lists) (§8), got: #{summarize(info)}"}}
  end

  # A BEAM timer takes at most 2^32-1 ms (49.7 days).
  defp timer?(%{"name" => name, "every_ms" => ms}),
    do: is_binary(name) and is_integer(ms) and ms > 0 and ms <= @max_u32

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

  def format_error({:window, _slot, _frames, _bytes} = r),
    do: Symbiont.Host.Credit.format_error(r)

  def format_error({:flooding, waiting, max}),
    do:
      "flooding: #{waiting} messages of its port waiting in the owner's mailbox " <>
        "(at most #{max}, its :max_mailbox)"

  def format_error({:too_many_calls, max}),
    do: "more than #{max} calls to the node at once (PROTOCOL.md §4.1)"

  def format_error({:before_ready, kind}), do: ~s("#{kind}" frame before "ready")
  def format_error({:after_ready, kind}), do: ~s(a second "#{kind}" frame, after "ready")

  def format_error({:version, theirs}),
    do: "protocol version #{inspect(theirs)}, expected #{@version}"

  def format_error(other), do: inspect(other)
end
