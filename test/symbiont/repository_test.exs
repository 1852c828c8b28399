defmodule Symbiont.RepositoryTest do
  # What a user's clone holds must stand on its own: no file points to a design document
  # or a folder that exists only beside the developers' checkout.
  use ExUnit.Case, async: true

  test "no tracked file points outside the repository" do
    {files, 0} = System.cmd("git", ["ls-files"])
    me = Path.relative_to_cwd(__ENV__.file)

    offenders =
      for file <- String.split(files, "\n", trim: true),
          file != me,
          File.regular?(file),
          text = File.read!(file),
          String.valid?(text),
          line <- String.split(text, "\n"),
          line =~ ~r/DESIGN\.md|\.\.\/shared\//,
          do: "#{file}: #{String.trim(line)}"

    assert offenders == []
  end
end
