// Plain-text output for meshctl: aligned tables (kubectl-style: a header row,
// columns as wide as their widest cell, three spaces between columns, no
// trailing blanks) and "key: value" blocks. Nothing here knows about the
// agent's JSON; commands/ turns responses into rows.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace aimesh {

class Table {
 public:
  enum class Align { kAuto, kLeft, kRight };

  explicit Table(std::vector<std::string> headers);

  // Rows shorter than the header are padded with empty cells; extra cells are
  // dropped.
  void addRow(std::vector<std::string> cells);
  // kAuto (the default): right-aligned when every cell below the header that
  // is not empty or "-" is a number (see isNumber), left-aligned otherwise.
  void setAlign(std::size_t column, Align align);

  std::size_t rowCount() const { return rows_.size(); }
  // Every line ends with '\n'. A table with no rows is just the header.
  std::string render() const;

  // "42", "-3", "0.25", "99%", "2/3" (active/total). Not "10.0.0.1", not "".
  static bool isNumber(const std::string& cell);
  // Display width: UTF-8 code points, so a non-ASCII name does not skew columns.
  static std::size_t displayWidth(const std::string& s);

 private:
  bool rightAligned(std::size_t column) const;

  std::vector<std::string> headers_;
  std::vector<Align> align_;
  std::vector<std::vector<std::string>> rows_;
};

// "key: value" lines with the values lined up after the longest key:
//   version:   0.1.0
//   pid:       123
std::string renderKeyValues(const std::vector<std::pair<std::string, std::string>>& items);

}  // namespace aimesh
