#include "format/table.h"

#include <algorithm>
#include <cctype>

namespace aimesh {
namespace {

constexpr const char* kColumnGap = "   ";

bool isDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

// -?digits(.digits)?%?
bool isDecimal(const std::string& s) {
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  std::size_t intStart = i;
  while (i < s.size() && isDigit(s[i])) ++i;
  if (i == intStart) return false;
  if (i < s.size() && s[i] == '.') {
    std::size_t fracStart = ++i;
    while (i < s.size() && isDigit(s[i])) ++i;
    if (i == fracStart) return false;
  }
  if (i < s.size() && s[i] == '%') ++i;
  return i == s.size();
}

bool isDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isDigit);
}

void pad(std::string& out, std::size_t n) { out.append(n, ' '); }

}  // namespace

Table::Table(std::vector<std::string> headers)
    : headers_(std::move(headers)), align_(headers_.size(), Align::kAuto) {}

void Table::addRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::setAlign(std::size_t column, Align align) {
  if (column < align_.size()) align_[column] = align;
}

bool Table::isNumber(const std::string& cell) {
  if (auto slash = cell.find('/'); slash != std::string::npos) {
    return isDigits(cell.substr(0, slash)) && isDigits(cell.substr(slash + 1));
  }
  return isDecimal(cell);
}

std::size_t Table::displayWidth(const std::string& s) {
  // Count every byte that does not continue a UTF-8 sequence.
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

bool Table::rightAligned(std::size_t column) const {
  if (align_[column] != Align::kAuto) return align_[column] == Align::kRight;
  bool any = false;
  for (const auto& row : rows_) {
    const std::string& cell = row[column];
    if (cell.empty() || cell == "-") continue;  // "-" = no value
    if (!isNumber(cell)) return false;
    any = true;
  }
  return any;
}

std::string Table::render() const {
  const std::size_t n = headers_.size();
  std::vector<std::size_t> width(n, 0);
  std::vector<bool> right(n, false);
  for (std::size_t c = 0; c < n; ++c) {
    width[c] = displayWidth(headers_[c]);
    for (const auto& row : rows_) width[c] = std::max(width[c], displayWidth(row[c]));
    right[c] = rightAligned(c);
  }

  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t c = 0; c < n; ++c) {
      if (c > 0) line += kColumnGap;
      std::size_t fill = width[c] - displayWidth(cells[c]);
      if (right[c]) pad(line, fill);
      line += cells[c];
      if (!right[c]) pad(line, fill);
    }
    // Left-aligned last columns leave padding behind; drop it.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string renderKeyValues(const std::vector<std::pair<std::string, std::string>>& items) {
  std::size_t keyWidth = 0;
  for (const auto& [key, value] : items) keyWidth = std::max(keyWidth, Table::displayWidth(key));
  std::string out;
  for (const auto& [key, value] : items) {
    out += key;
    out += ':';
    if (!value.empty()) {
      pad(out, keyWidth - Table::displayWidth(key) + 1);
      out += value;
    }
    out += '\n';
  }
  return out;
}

}  // namespace aimesh
